//! Writing results to stdout: lines, JSON, and plain aligned tables.
//!
//! Writes go through `io::Result`, so a closed pipe ends the command quietly (see `main`).

use std::io::{self, Write};

use serde::Serialize;

/// Writes one line to stdout.
///
/// # Errors
/// When stdout is closed or unwritable.
pub(crate) fn line(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes a value as pretty JSON to stdout.
///
/// # Errors
/// When stdout is closed or unwritable.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Renders rows under a header as columns separated by two spaces; the last column is not
/// padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|it| it.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|it| (*it).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Writes text to stdout as it is.
///
/// # Errors
/// When stdout is closed or unwritable.
pub(crate) fn text(text: &str) -> io::Result<()> {
    bytes(text.as_bytes())
}

/// Writes bytes to stdout as they are (a stored body need not be UTF-8).
///
/// # Errors
/// When stdout is closed or unwritable.
pub(crate) fn bytes(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Writes one line to stderr; errors writing to stderr are ignored (there is nowhere left to
/// report them).
pub(crate) fn note(text: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn renders_aligned_tables() {
        let rendered = table(
            &["ID", "TRIGGER", "URL"],
            &[
                vec!["a".into(), "MOVED".into(), "https://x/".into()],
                vec!["bbbb".into(), "FULL_TEXT_INDEXED".into(), "h".into()],
            ],
        );
        expect![[r#"
            ID    TRIGGER            URL
            a     MOVED              https://x/
            bbbb  FULL_TEXT_INDEXED  h
        "#]]
        .assert_eq(&rendered);
    }
}
