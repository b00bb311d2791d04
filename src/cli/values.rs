//! Values in and out of the command line, binary-safe. In: the VALUE argument, a file
//! (`--value-file`), or standard input (VALUE `-`, or no VALUE and no file) — an argument list
//! cannot carry more than about 128 KiB, nor a NUL byte. Out: to a pipe or a file, exactly the
//! value's bytes (nothing added, so `ravel get k > f` gives back what `--value-file f` put); on
//! a terminal, the value as text with control bytes and invalid UTF-8 escaped (a value must not
//! recolour the terminal or move its cursor) and a newline; in JSON, base64.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use base64::Engine;
use bytes::Bytes;

use crate::server::kv_service::VALUE_BYTES_MAX;

/// The value a write command is given, read from where the user put it.
pub fn read_value(value: Option<&str>, value_file: Option<&Path>) -> Result<Bytes, String> {
    match (value, value_file) {
        (Some(_), Some(_)) => Err("give the value or --value-file, not both".to_string()),
        (Some(value), None) if value != "-" => Ok(Bytes::copy_from_slice(value.as_bytes())),
        (None, Some(path)) => {
            let file = std::fs::File::open(path)
                .map_err(|error| format!("--value-file {}: {error}", path.display()))?;
            read_bounded(file, &format!("--value-file {}", path.display()))
        }
        // No value at all, and a person at the terminal rather than a pipe: say what to give
        // instead of waiting for input they do not know is expected (`-` still reads it).
        (None, None) if std::io::stdin().is_terminal() => Err(
            "give the value: as an argument, with --value-file FILE, or on standard input (pipe \
             it, or give `-`)"
                .to_string(),
        ),
        (_, None) => read_bounded(std::io::stdin().lock(), "standard input"),
    }
}

/// Reads at most one byte beyond the largest value, so a huge input fails with a clear error
/// instead of filling memory.
fn read_bounded(source: impl Read, what: &str) -> Result<Bytes, String> {
    let mut value = Vec::new();
    source
        .take(VALUE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut value)
        .map_err(|error| format!("{what}: {error}"))?;
    if value.len() > VALUE_BYTES_MAX {
        return Err(format!(
            "{what} holds more than {VALUE_BYTES_MAX} bytes, the largest value allowed"
        ));
    }
    Ok(Bytes::from(value))
}

/// Prints a value read back: raw to a pipe or file, escaped text on a terminal.
pub fn print_value(value: &[u8]) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = stdout.lock();
    if terminal {
        writeln!(out, "{}", escaped(value))?;
    } else {
        out.write_all(value)?;
    }
    out.flush()
}

/// The value as text a terminal shows safely: valid UTF-8 stays as it is except control
/// characters (escaped as `\n`, `\x1b`, `\u{85}`, ...); bytes that are not UTF-8 become `\xNN`.
pub fn escaped(value: &[u8]) -> String {
    let mut text = String::with_capacity(value.len());
    for chunk in value.utf8_chunks() {
        for character in chunk.valid().chars() {
            if character.is_control() {
                text.extend(character.escape_default());
            } else {
                text.push(character);
            }
        }
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// Bytes as JSON carries them: standard base64 with padding (etcdctl's `-w json` does the same).
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control bytes (an escape sequence that would recolour the terminal), a byte that is not
    /// UTF-8 and a C1 control are escaped; printable text, accents included, is kept.
    #[test]
    fn a_terminal_sees_control_bytes_and_invalid_utf8_escaped() {
        assert_eq!(escaped(b"plain"), "plain");
        assert_eq!(escaped("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(escaped(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escaped(b"a\nb\tc"), "a\\nb\\tc");
        assert_eq!(escaped(b"\xff\xfe ok"), "\\xff\\xfe ok");
        assert_eq!(escaped("\u{85}".as_bytes()), "\\u{85}");
    }

    #[test]
    fn values_come_from_the_argument_or_a_file_and_never_exceed_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        std::fs::write(&path, b"\x00\x01binary\xff").unwrap();
        assert_eq!(
            read_value(None, Some(&path)).unwrap(),
            Bytes::from_static(b"\x00\x01binary\xff")
        );
        assert_eq!(
            read_value(Some("text"), None).unwrap(),
            Bytes::from_static(b"text")
        );
        assert!(read_value(Some("text"), Some(&path)).is_err());
        std::fs::write(&path, vec![7u8; VALUE_BYTES_MAX + 1]).unwrap();
        let error = read_value(None, Some(&path)).unwrap_err();
        assert!(error.contains("more than"), "{error}");
        let missing = dir.path().join("missing");
        let error = read_value(None, Some(&missing)).unwrap_err();
        assert!(error.contains("missing"), "{error}");
        assert_eq!(base64(b"\x00\xff"), "AP8=");
    }
}
