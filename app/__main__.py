"""``voluble``: the Litestar CLI with the app preset, plus Voluble's own command groups."""

from __future__ import annotations

import os
import sys

#: our own commands need no web application: run them without building one (a worker starts in a
#: fraction of the time; ``run`` builds it once, in uvicorn). They are registered on the Litestar CLI
#: too, so ``--help`` lists them.
STANDALONE = {"up", "run", "workers", "users", "tokens", "metrics"}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in STANDALONE:
        from app.cli import standalone

        sys.exit(standalone())
    os.environ.setdefault("LITESTAR_APP", "app.asgi:create_app")
    from litestar.cli.main import litestar_group

    sys.exit(litestar_group())


if __name__ == "__main__":
    main()
