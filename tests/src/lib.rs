//! Workspace-wide checks; the tests live in `tests/`.
