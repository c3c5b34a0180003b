"""Fixtures of the end-to-end suite (skipped entirely without KUBECHAT_E2E_URL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.cluster import E2E_URL, client


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    if not E2E_URL:
        pytest.skip("KUBECHAT_E2E_URL is not set")
    async with client() as http_client:
        yield http_client
