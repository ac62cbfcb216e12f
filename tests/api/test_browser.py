"""GraphiQL works in a real browser with no internet: headless Chromium (Debian's package, driven by
Playwright) opens `/graphql` with every request to a host other than the server's loopback address
refused, gets the server's schema, runs a query entered into GraphiQL's editor (with a header from the
headers editor) and a subscription over a websocket, and the result pane shows the server's answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from urllib.parse import parse_qs, quote, urlsplit

from playwright.async_api import Page, Request, Route, WebSocket, async_playwright, expect

from tests.support import LiveServer, need, new_user

CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium reaches out to Google's services of its own accord (and stalls on the
# refused connections of a closed network).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
TIMEOUT_MS = 30_000
# GraphiQL 3's editors are CodeMirror 5 instances: the element holds the editor as `.CodeMirror`.
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESULT_PANE = ".graphiql-response .CodeMirror"
RECORD = "mutation($v: ID!, $lat: Float!, $long: Float!) { recordVendorLocation(vendorId: $v, lat: $lat, long: $long) { id } }"


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOOPBACK


async def enter_query(page: Page, text: str) -> None:
    """Replace the editor's text, entered as one input event (as a paste or an IME does). Not key by key:
    the page hands every edit back to GraphiQL as its `query` prop, and on a slow machine a re-render
    with an earlier value resets the editor between keys."""
    await page.locator(QUERY_EDITOR).click()
    await page.keyboard.press("ControlOrMeta+A")
    await page.keyboard.insert_text(text)
    await page.wait_for_function(
        "([selector, q]) => document.querySelector(selector).CodeMirror.getValue() === q", arg=[QUERY_EDITOR, text]
    )
    # GraphiQL itself took the edit: the page records its query in the address (`?q=`).
    await page.wait_for_function("q => new URLSearchParams(location.search).get('q') === q", arg=text)


async def test_graphiql_runs_a_query_and_a_subscription_in_chromium_offline(server: LiveServer) -> None:
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (Debian's chromium package; `.ci/run` installs it)")

    name = f"browser-{uuid.uuid4().hex[:12]}"
    token = await new_user(server)
    me = (await server.data("{ me { email } }", token=token))["me"]["email"]
    created = await server.data(
        "mutation($n: String!) { createVendor(input: {name: $n}) { id } }", {"n": name}, token=token
    )
    vendor = created["createVendor"]["id"]
    query = f'{{ me {{ email }} vendors(search: "{name}", first: 1) {{ totalCount nodes {{ name }} }} }}'
    subscription = f'subscription {{ vendorLocationUpdated(vendorId: "{vendor}") {{ lat long }} }}'
    # The headers editor's initial text, as a shared GraphiQL link carries it.
    headers = json.dumps({"Authorization": f"Bearer {token}"})

    page_errors: list[str] = []
    console_errors: list[str] = []
    requested: list[str] = []
    refused: list[str] = []
    sockets: list[str] = []

    async def loopback_only(route: Route) -> None:
        if is_loopback(route.request.url):
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort("internetdisconnected")

    def on_request(request: Request) -> None:
        requested.append(request.url)

    def on_websocket(socket: WebSocket) -> None:
        sockets.append(socket.url)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            await context.route("**/*", loopback_only)
            context.on("request", on_request)
            page = await context.new_page()
            page.on("websocket", on_websocket)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            # Shown by pytest if the test fails: a refused script (say, a wrong integrity hash) shows here.
            page.on("console", lambda message: print(f"console {message.type}: {message.text}"))
            page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)

            await page.goto(f"{server.url}/graphql?headers={quote(headers)}")
            await expect(page.locator(QUERY_EDITOR)).to_be_visible(timeout=TIMEOUT_MS)
            # GraphiQL has the server's schema (its introspection query ran) and has wired up its editor.
            await page.wait_for_function(
                "selector => Boolean(document.querySelector(selector)?.CodeMirror?.getOption('lint')?.schema)",
                arg=QUERY_EDITOR,
            )

            await enter_query(page, query)
            assert parse_qs(urlsplit(page.url).query)["q"] == [query]
            async with page.expect_response(
                lambda r: r.url == f"{server.url}/graphql" and name in (r.request.post_data or "")
            ) as response_info:
                await page.locator(".graphiql-execute-button").click()
            response = await response_info.value
            assert response.ok, await response.text()
            # The header came from the headers editor.
            assert (await response.request.all_headers()).get("authorization") == f"Bearer {token}"

            result = page.locator(RESULT_PANE)
            await expect(result).to_contain_text(f'"name": "{name}"', timeout=TIMEOUT_MS)
            pane = json.loads(await result.evaluate("el => el.CodeMirror.getValue()"))
            assert pane == {"data": {"me": {"email": me}, "vendors": {"totalCount": 1, "nodes": [{"name": name}]}}}

            # A subscription runs over GraphiQL's websocket; a position recorded after it started shows.
            await enter_query(page, subscription)
            await page.locator(".graphiql-execute-button").click()
            async with asyncio.timeout(TIMEOUT_MS / 1000):
                while not server.deps.hub.subscribers(f"vendor:{vendor}"):
                    await asyncio.sleep(0.01)
            await server.data(RECORD, {"v": vendor, "lat": 12.5, "long": -3.25}, token=token)
            await expect(result).to_contain_text('"lat": 12.5', timeout=TIMEOUT_MS)
            pane = json.loads(await result.evaluate("el => el.CodeMirror.getValue()"))
            assert pane == {"data": {"vendorLocationUpdated": {"lat": 12.5, "long": -3.25}}}
        finally:
            await browser.close()

    assert not refused, f"GraphiQL's page reached beyond the server: {refused}"
    assert requested and all(urlsplit(url).netloc == urlsplit(server.url).netloc for url in requested), requested
    assert any("/graphql/assets/graphiql@" in url for url in requested), requested
    assert sockets == [server.ws_url], sockets
    assert not page_errors, page_errors
    assert not console_errors, console_errors
