"""End-to-end tests against a deployed kubechat (`make e2e`: kind, the chart, the examples)."""
