"""``voluble``: the Litestar CLI with the app preset, plus Voluble's own command groups."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("LITESTAR_APP", "app.asgi:create_app")
    from litestar.cli.main import litestar_group

    sys.exit(litestar_group())


if __name__ == "__main__":
    main()
