from kubechat.cli import main

main()
