"""Write the generated docs: `docs/keys.md` from the key table and `docs/screenshot.svg`, the
app on the bundled demo model after one `g`. Run it from the repository as
`python -m tools.write_docs`; tests/test_docs.py checks that docs/keys.md is current.

The screenshot runs at temperature 0 on the bundled demo model, so it changes only when the
code or the demo model does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gpt2scope.engine import load_model
from gpt2scope.tui.app import ScopeApp
from gpt2scope.tui.cli import app_parser, options_from, settings_from
from gpt2scope.tui.keys import keys_markdown
from gpt2scope.tui.session import ModelInfo
from gpt2scope.weights.hub import demo
from tests.driver import settle

DOCS = Path(__file__).resolve().parent.parent / "docs"
KEYS_FILE = DOCS / "keys.md"
SCREENSHOT_FILE = DOCS / "screenshot.svg"
SCREENSHOT_SIZE = (80, 24)
# Temperature 0: argmax, so the screen does not depend on the seed or on sampling.
SCREENSHOT_ARGS = [
    "--prompt",
    "The cat sat on the mat because",
    "--temperature",
    "0",
    "--head",
    "2",
]


def demo_app() -> ScopeApp:
    """The app as `gpt2scope SCREENSHOT_ARGS` opens it on the demo model, whatever is cached."""
    resolved = demo()
    model = load_model(resolved.path)
    info = ModelInfo.of(model, resolved.name, resolved.origin, resolved.description)
    options = options_from(app_parser().parse_args(SCREENSHOT_ARGS))
    return ScopeApp(model, info, settings_from(options), options.prompt)


async def take_screenshot(path: Path) -> None:
    app = demo_app()
    async with app.run_test(size=SCREENSHOT_SIZE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        app.save_screenshot(path.name, str(path.parent))


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    KEYS_FILE.write_text(keys_markdown(), encoding="utf-8")
    asyncio.run(take_screenshot(SCREENSHOT_FILE))
    print(f"wrote {KEYS_FILE} and {SCREENSHOT_FILE}")


if __name__ == "__main__":
    main()
