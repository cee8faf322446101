"""The built-in page (/ui) in a real headless Chromium against the real app and Redis.

Skipped, with the reason, where no Chromium is installed (`.ci/run` installs Debian's).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest
import redis
from live_server import live_server
from service_fakes import HashRecommender

from service.api.app import create_app
from service.keys import history_key
from service.local.redis_server import free_port
from service.settings import Settings

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (apt-get install chromium)")
# enough virtual time for the page's fetches; --no-sandbox: CI runs as root
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--window-size=1100,900"
]  # fmt: skip


def _browser(*args: str) -> str:
    assert BROWSER is not None
    done = subprocess.run([BROWSER, *FLAGS, *args], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _items(dom: str, list_id: str) -> list[tuple[str, str]]:
    """(item id, title) of each entry of one of the page's lists."""
    section = re.search(rf'<ol id="{list_id}">(.*?)</ol>', dom, re.S)
    assert section is not None, dom[:2000]
    entries = re.findall(r'data-item-id="([^"]+)"><span class="title">([^<]*)</span>', section.group(1))
    return [(unescape(item_id), unescape(title)) for item_id, title in entries]


@pytest.fixture
def page_url(redis_url: str, recommender: HashRecommender) -> str:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # a blank Redis, as the async redis_client fixture gives other tests
    client.rpush(history_key("u1"), "i1", "i2")
    client.close()
    settings = Settings(redis_url=redis_url, max_k=20, default_k=10, history_len=5)
    with live_server(create_app(settings, recommender), free_port()) as url:
        yield f"{url}/ui"


def test_the_page_shows_history_and_recommendations_and_records_a_purchase(
    page_url: str, recommender: HashRecommender, tmp_path: Path
) -> None:
    dom = _browser("--dump-dom", f"{page_url}?user=u1")
    assert 'data-loaded="u1"' in dom
    assert _items(dom, "history") == [("i1", "Item 1"), ("i2", "Item 2")]
    recs = _items(dom, "recs")
    expected = [i.item_id for i in recommender.top_k(["i1", "i2"], 30) if i.item_id not in {"i1", "i2"}][:10]
    assert [item_id for item_id, _ in recs] == expected
    assert all(title == f"Item {item_id[1:]}" for item_id, title in recs)
    assert "(model, model test-v1)" in dom

    bought = expected[0]
    after = _browser("--dump-dom", f"{page_url}?user=u1&bought={bought}")
    assert [item_id for item_id, _ in _items(after, "history")] == ["i1", "i2", bought]
    assert bought not in [item_id for item_id, _ in _items(after, "recs")]  # the list changed


def test_the_page_renders_something_to_look_at(page_url: str, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "ui.png"
    _browser(f"--screenshot={shot}", f"{page_url}?user=u1")
    image = Image.open(shot).convert("L")
    assert image.size == (1100, 900)
    dark = sum(1 for value in image.getdata() if value < 128)
    assert dark > 2000  # text on the page, not a blank or error screen
