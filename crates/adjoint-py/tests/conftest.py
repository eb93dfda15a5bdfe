"""Shared helpers: the CLI binary the cross-checks compare with."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def cli():
    """The `adjoint` binary: $ADJOINT_BIN, or the workspace's build (`cargo test` makes one).

    Skips the test where there is none, unless ADJOINT_REQUIRE_CLI is set (CI sets it)."""
    candidates = [os.environ.get("ADJOINT_BIN", ""), ROOT / "target/release/adjoint", ROOT / "target/debug/adjoint"]
    for c in candidates:
        if c and Path(c).is_file():
            return str(c)
    if os.environ.get("ADJOINT_REQUIRE_CLI"):
        raise AssertionError("the adjoint binary is required (ADJOINT_REQUIRE_CLI) but was not found")
    pytest.skip("no adjoint binary: build it with `cargo build --release -p adjoint-cli` or set ADJOINT_BIN")
