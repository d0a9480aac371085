"""`/docs`: the interactive reference of `/openapi.json`, served locally, usable with the page's token."""

from __future__ import annotations

from collections.abc import Callable

from tests.browser.avatar_page import AvatarPage

OpenPage = Callable[..., AvatarPage]


def test_the_reference_tries_an_endpoint_with_the_token_of_the_page(
    open_page: OpenPage, token: Callable[..., str], user: str
) -> None:
    page = open_page().open()
    secret = token(user)
    page.sign_in(secret)
    page.page.get_by_role("link", name="API reference").click()
    operation = page.page.locator('.opblock-get:has(.opblock-summary-path[data-path="/me/avatar"])')
    operation.locator(".opblock-summary-control").click()
    page.shot("reference")
    with page.page.expect_request(lambda request: request.url.endswith("/me/avatar")) as sent:
        operation.get_by_role("button", name="Execute").click()
    assert sent.value.headers.get("authorization") == f"Bearer {secret}", "the page's token was not filled in"
    operation.locator(".live-responses-table .response-col_status", has_text="404").wait_for()
    page.shot("tried-me-avatar")
    assert not any(secret in url for url in page.urls)
