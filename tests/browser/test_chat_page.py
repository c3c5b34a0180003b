"""Chatting in the page: streaming, stop, history, sessions, knowledge bases with citations,
images, tools, untrusted output, sign-in and reconnects, in Chromium against the real API."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import FilePayload, Page, expect

from tests.browser.conftest import OpenPage
from tests.conftest import ALICE_KEY, ApiProcess, auth
from tests.images import text_image

pytestmark = pytest.mark.triton

XSS_MARKUP = (
    "<img src=x onerror=window.__xss=1> [x](javascript:window.__xss=2) <script>window.__xss=3</script>"
)


def choose_model(page: Page, name: str) -> None:
    page.get_by_label("Model", exact=True).select_option(name)


def composer_menu(page: Page, name: str) -> Any:
    return page.get_by_role("form", name="Ask").locator("summary", has_text=name)


def set_options(page: Page, max_tokens: int | None = None, temperature: float | None = None) -> None:
    composer_menu(page, "Options").click()
    if max_tokens is not None:
        page.get_by_label("Max tokens").fill(str(max_tokens))
    if temperature is not None:
        page.get_by_label("Temperature").fill(str(temperature))
    composer_menu(page, "Options").click()


def ask(page: Page, text: str) -> None:
    """Type and send a question; returns once its answer has started (`start` arrived)."""
    answers = page.locator("article.answer").count()
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")  # sent: the composer is cleared only then
    expect(page.locator("article.answer")).to_have_count(answers + 1)


def last_answer(page: Page) -> Any:
    return page.locator("article.answer").last


def wait_done(page: Page, status: str = "complete") -> Any:
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-status", status)
    return answer


def session_of(page: Page) -> str:
    match = re.search(r"/chat/([^/?#]+)$", page.url)
    assert match, page.url
    return match.group(1)


def stored_messages(api: ApiProcess, session: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{api.url}/sessions/{session}/messages", headers=auth())
    return list(response.json()["items"])


def no_script_ran(page: Page) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x'], a[href^='javascript'], script:not([src])").count() == 0


def test_an_answer_streams_into_the_page_and_survives_a_reload(
    web_api: ApiProcess, open_page: OpenPage
) -> None:
    page = open_page(web_api)
    choose_model(page, "smollm2")
    set_options(page, max_tokens=40)
    # Every change the answer's text goes through while it streams, as the browser rendered it.
    page.evaluate(
        """() => {
            window.__lengths = [];
            new MutationObserver(() => {
                const answer = [...document.querySelectorAll('article.answer')].at(-1);
                if (!answer || answer.dataset.status !== 'streaming') return;
                const n = (answer.querySelector('.markdown')?.textContent ?? '').length;
                if (window.__lengths.at(-1) !== n) window.__lengths.push(n);
            }).observe(document.body, {subtree: true, childList: true, characterData: true,
                                       attributes: true});
        }"""
    )
    ask(page, "What is the capital of France?")
    expect(page).to_have_url(re.compile(r"/chat/[^/]+$"))
    first = wait_done(page)
    lengths = page.evaluate("window.__lengths")
    assert len([n for n in lengths if n > 0]) >= 3, lengths  # several updates before `done`
    assert lengths == sorted(lengths), lengths
    text = first.locator(".markdown").inner_text()
    assert text.strip()

    # A second turn renders only its own messages: the first answer's component is left alone.
    first_id = first.get_attribute("data-message-id")
    before = page.evaluate("(id) => window.__kubechatStats.messageRenders[id]", first_id)
    ask(page, "And of Italy?")
    wait_done(page)
    assert page.locator("article.answer").count() == 2
    assert page.evaluate("(id) => window.__kubechatStats.messageRenders[id]", first_id) == before

    # The URL names the session: a reload shows the stored history; back and forward work.
    session = session_of(page)
    page.reload()
    expect(page.locator("article.question")).to_have_count(2)
    expect(page.locator("article.question").first).to_contain_text("What is the capital of France?")
    expect(page.locator("article.answer").first.locator(".markdown")).to_have_text(text)
    page.go_back()
    expect(page).to_have_url(f"{web_api.url}/")
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()
    page.go_forward()
    expect(page).to_have_url(f"{web_api.url}/chat/{session}")
    expect(page.locator("article.answer")).to_have_count(2)
    # Usage and timings, on demand.
    answer = page.locator("article.answer").last
    answer.get_by_role("button", name="Usage").click()
    expect(answer.locator(".usage")).to_contain_text("Answer tokens")


def test_stop_ends_the_answer_and_it_is_stored_as_stopped(web_api: ApiProcess, open_page: OpenPage) -> None:
    page = open_page(web_api)
    choose_model(page, "smollm2")
    set_options(page, max_tokens=400)
    ask(page, "Write a long story about a lighthouse keeper and the sea.")
    expect(last_answer(page).locator(".markdown")).not_to_be_empty()
    page.get_by_role("button", name="Stop").click()
    answer = wait_done(page, "stopped")
    expect(answer.locator(".status")).to_contain_text("Stopped")
    assert stored_messages(web_api, session_of(page))[-1]["status"] == "stopped"
    page.reload()
    expect(last_answer(page).locator(".status")).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_sessions_are_listed_renamed_and_deleted(web_api: ApiProcess, open_page: OpenPage) -> None:
    with httpx.Client(base_url=web_api.url, headers=auth()) as http:
        made = [http.post("/sessions", json={"title": f"bulk chat {i:02d}"}).json()["id"] for i in range(34)]
    page = open_page(web_api)
    chats = page.get_by_role("navigation", name="Chats")
    expect(chats.get_by_role("link", name="bulk chat 33")).to_be_visible()  # newest first
    expect(chats.get_by_role("link", name="bulk chat 00")).to_have_count(0)  # not on the first page
    chats.get_by_role("button", name="Older chats").click()
    expect(chats.get_by_role("link", name="bulk chat 00")).to_be_visible()

    chats.get_by_role("button", name="Rename bulk chat 33").click()
    chats.get_by_label("Chat title").fill("Renamed in the page")
    chats.get_by_label("Chat title").press("Enter")
    expect(chats.get_by_role("link", name="Renamed in the page")).to_be_visible()
    assert (
        httpx.get(f"{web_api.url}/sessions/{made[-1]}", headers=auth()).json()["title"]
        == "Renamed in the page"
    )

    chats.get_by_role("link", name="Renamed in the page").click()
    expect(page).to_have_url(f"{web_api.url}/chat/{made[-1]}")
    expect(page.get_by_text("No messages yet")).to_be_visible()
    chats.get_by_role("button", name="Delete Renamed in the page").click()
    chats.get_by_role("button", name="Delete", exact=True).click()
    expect(chats.get_by_role("link", name="Renamed in the page")).to_have_count(0)
    expect(page).to_have_url(f"{web_api.url}/")
    assert httpx.get(f"{web_api.url}/sessions/{made[-1]}", headers=auth()).status_code == 404


def test_documents_uploaded_in_the_page_are_indexed_and_cited(
    web_api: ApiProcess, open_page: OpenPage
) -> None:
    guide = (
        "# Quokka rotation\n\n## Procedure\n\n"
        "The quokka vault keys are rotated every ninety days by the zephyr team using the marmalade tool.\n"
    )
    hostile = f"# Notes\n\n{XSS_MARKUP}\n\nNothing about quokkas here, only hostile markup.\n"
    page = open_page(web_api)
    page.get_by_role("button", name="Documents").click()
    dialog = page.get_by_role("dialog", name="Knowledge bases")
    dialog.get_by_label("Knowledge base", exact=True).select_option("handbook")
    dialog.get_by_label(re.compile("Upload documents")).set_input_files(
        [
            FilePayload(name="quokka-guide.md", mimeType="text/markdown", buffer=guide.encode()),
            FilePayload(name="hostile.md", mimeType="text/markdown", buffer=hostile.encode()),
        ]
    )
    for name in ("quokka-guide.md", "hostile.md"):
        expect(dialog.locator(f"tr[data-document='{name}'] .doc-status")).to_have_text("indexed")
    dialog.get_by_role("button", name="Close knowledge bases").click()

    choose_model(page, "synthetic")
    set_options(page, max_tokens=8)
    composer_menu(page, "Knowledge").click()
    page.get_by_label("handbook").check()
    composer_menu(page, "Knowledge (1)").click()
    ask(page, "How often are the quokka vault keys rotated by the zephyr team?")
    answer = wait_done(page)
    answer.get_by_role("button", name=re.compile(r"^\[1\]")).click()
    source = page.get_by_role("dialog", name="Source [1]")
    expect(source.locator(".citation-document")).to_have_text("quokka-guide.md")
    expect(source).to_contain_text("marmalade")
    source.get_by_role("button", name="Close source").click()

    # The hostile document's markup is shown as text wherever it appears, and never runs.
    ask(page, "Show me the hostile markup notes about onerror and javascript")
    answer = wait_done(page)
    chip = answer.get_by_role("button", name=re.compile("hostile.md"))
    chip.first.click()
    expect(page.get_by_role("dialog", name=re.compile(r"Source \[\d\]"))).to_contain_text(
        "onerror=window.__xss=1"
    )
    no_script_ran(page)
    page.get_by_role("button", name="Close source").click()

    # Deleted from the panel: gone from the list and from the knowledge base.
    page.get_by_role("button", name="Documents").click()
    dialog.get_by_role("button", name="Delete hostile.md").click()
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(dialog.locator("tr[data-document='hostile.md']")).to_have_count(0)
    listed = httpx.get(f"{web_api.url}/knowledge-bases/handbook/documents", headers=auth()).json()
    assert "hostile.md" not in {d["name"] for d in listed["items"]}


def test_an_attached_image_shows_what_the_model_was_told(web_api: ApiProcess, open_page: OpenPage) -> None:
    page = open_page(web_api)
    choose_model(page, "synthetic")
    set_options(page, max_tokens=4)
    image = text_image(["INVOICE 2024-117", "Total due: 42.50 EUR"])
    page.locator("input[type=file][accept*='image/png']").set_input_files(
        FilePayload(name="invoice.png", mimeType="image/png", buffer=image)
    )
    expect(page.get_by_label("Attached images").get_by_text("ready")).to_be_visible()
    ask(page, "What is the total due?")
    wait_done(page)
    question = page.locator("article.question").last
    expect(question.locator("img.thumbnail")).to_be_visible()
    description = question.locator("details.image-description")
    expect(description).not_to_have_attribute("open", "")  # collapsed until asked for
    description.locator("summary").click()
    expect(description.locator("pre")).to_contain_text("42.50")


def test_tool_calls_show_as_cards_and_untrusted_output_runs_nothing(
    web_api: ApiProcess, open_page: OpenPage
) -> None:
    page = open_page(web_api)
    choose_model(page, "tool-caller")
    ask(page, 'call demo__add {"a": 2, "b": 3}')
    answer = wait_done(page)
    card = answer.locator("details.tool-card")
    expect(card.locator("summary")).to_contain_text("demo__add")
    expect(card.locator("summary")).to_contain_text("done")
    card.locator("summary").click()
    expect(card.locator("pre").last).to_have_text("5")
    expect(answer.locator(".markdown")).to_contain_text("Tool results: demo__add: 5")

    # A tool result and an answer that carry markup: shown as text, nothing runs, no unsafe link.
    ask(page, 'call demo__echo {"text": "' + XSS_MARKUP.replace('"', '\\"') + '"}')
    answer = wait_done(page)
    answer.locator("details.tool-card summary").click()
    expect(answer.locator("details.tool-card pre").last).to_contain_text("<img src=x onerror=window.__xss=1>")
    expect(answer.locator(".markdown")).to_contain_text("<img src=x onerror=window.__xss=1>")
    composer_menu(page, "Options").click()
    page.get_by_label("Let the model call tools").uncheck()
    composer_menu(page, "Options").click()
    ask(page, XSS_MARKUP)
    answer = wait_done(page)
    expect(answer.locator(".markdown")).to_contain_text("No tool needed")
    no_script_ran(page)


def test_a_wrong_api_key_is_refused_and_a_right_one_signs_in(
    web_api: ApiProcess, open_page: OpenPage
) -> None:
    page = open_page(web_api, key=None)
    form = page.get_by_role("form", name="Sign in to kubechat")
    form.get_by_label("API key").fill("not-a-key")
    form.get_by_role("button", name="Sign in").click()
    expect(form.get_by_role("alert")).to_contain_text("not accepted")
    expect(form.get_by_role("alert")).to_contain_text("unauthenticated")
    form.get_by_label("API key").fill(ALICE_KEY)
    form.get_by_role("button", name="Sign in").click()
    expect(page.get_by_label("Model", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('kubechat.apiKey')") == ALICE_KEY
    assert page.evaluate("localStorage.length") == 0


def test_local_mode_asks_for_nothing(local_api: ApiProcess, open_page: OpenPage) -> None:
    page = open_page(local_api, key=None)
    choose_model(page, "synthetic")
    set_options(page, max_tokens=5)
    ask(page, "hello")
    answer = wait_done(page)
    expect(answer.locator(".markdown")).to_have_text("token0 token1 token2 token3 token4")
    assert page.get_by_role("button", name="Sign out").count() == 0


def test_the_model_picker_offers_the_chat_model_and_sets_development_models_apart(
    local_api: ApiProcess, open_page: OpenPage
) -> None:
    """Issue 20: the benchmark and test models were offered beside the chat model as its equals."""
    page = open_page(local_api, key=None)
    picker = page.get_by_label("Model", exact=True)
    expect(picker).to_have_value("smollm2")  # the default chat model is preselected
    apart = picker.locator("optgroup[label='For development and benchmarks'] > option")
    expect(apart).to_have_count(2)
    assert sorted(apart.evaluate_all("options => options.map(o => o.value)")) == ["synthetic", "tool-caller"]
    for_people = picker.locator(":scope > option")
    assert for_people.evaluate_all("options => options.map(o => o.value)") == ["smollm2"]


def test_a_dropped_socket_reconnects_and_shows_the_stored_history(
    local_api: ApiProcess, open_page: OpenPage
) -> None:
    # The browser logs each refused reconnect while the API is down.
    page = open_page(local_api, key=None, allow_console="ERR_CONNECTION_REFUSED")
    choose_model(page, "smollm2")
    set_options(page, max_tokens=300)
    ask(page, "Tell me a long story about mountains.")
    expect(last_answer(page).locator(".markdown")).not_to_be_empty()
    # Mid-answer the API restarts (as a pod does in a rollout): the socket drops.
    local_api.stop()
    expect(page.get_by_role("status")).to_contain_text(re.compile("Reconnect|Connection lost"))
    local_api.start()
    # Back: the stored history, the cut answer kept as interrupted, and the chat goes on.
    expect(last_answer(page)).to_have_attribute("data-status", "interrupted")
    expect(last_answer(page).locator(".status")).to_contain_text("Interrupted")
    expect(page.get_by_role("status")).to_have_count(0)
    choose_model(page, "synthetic")
    set_options(page, max_tokens=3)
    ask(page, "still there?")
    expect(last_answer(page).locator(".markdown")).to_have_text("token0 token1 token2")
