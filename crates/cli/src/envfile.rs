//! The `--env-file` format (dotenv): one `KEY=VALUE` per line.
//!
//! * Blank lines and lines whose first non-blank character is `#` are
//!   ignored; so is a UTF-8 byte order mark; `\r\n` line endings are fine.
//! * An optional `export ` before the name is ignored (so a file can also be
//!   `source`d by a shell); whitespace around the name and before the value
//!   is trimmed.
//! * A value in single quotes is taken literally; in double quotes, `\n`,
//!   `\r`, `\t`, `\"` and `\\` are escapes (any other backslash stays as
//!   is). After the closing quote only blanks and a `# comment` may follow.
//! * An unquoted value runs to the end of the line, less trailing blanks
//!   and a ` # comment` (a `#` after a blank); a `#` inside a word stays.
//! * Values are one line each and taken as they are: no `$VAR` expansion.
//! * A name given twice: the later line wins.
//!
//! Errors say which line is wrong and why, but never quote the line: it may
//! hold a secret.

use nodeos_manifest::settings::check_env;

/// A line that is not a valid `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, without the line's value.
    pub problem: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for LineError {}

/// Parses an env file's bytes into `(name, value)` pairs in file order
/// (a name may occur more than once; the last occurrence should win).
pub fn parse(bytes: &[u8]) -> Result<Vec<(String, String)>, LineError> {
    let text = std::str::from_utf8(bytes).map_err(|e| LineError {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        problem: "is not UTF-8 text".into(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut vars = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        match parse_line(line) {
            Ok(Some(var)) => vars.push(var),
            Ok(None) => {}
            Err(problem) => {
                return Err(LineError {
                    line: index + 1,
                    problem,
                });
            }
        }
    }
    Ok(vars)
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// One line without its line ending: `None` for blanks and comments.
fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim_start_matches(is_blank);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = match line.strip_prefix("export") {
        Some(rest) if rest.starts_with(is_blank) => rest.trim_start_matches(is_blank),
        _ => line,
    };
    let Some((name, value)) = line.split_once('=') else {
        return Err("expected KEY=VALUE (no `=` on this line)".into());
    };
    let name = name.trim_matches(is_blank);
    if name.is_empty() {
        return Err("the variable name before `=` is empty".into());
    }
    if name.contains(char::is_whitespace) {
        // Not quoted: a missing `=` may have turned a value into the name.
        return Err("the variable name before `=` contains a blank".into());
    }
    let value = parse_value(value.trim_start_matches(is_blank))?;
    check_env(name, &value)?;
    Ok(Some((name.to_owned(), value)))
}

fn parse_value(value: &str) -> Result<String, String> {
    if let Some(rest) = value.strip_prefix('\'') {
        let Some((literal, after)) = rest.split_once('\'') else {
            return Err("the single-quoted value has no closing `'` (values are one line)".into());
        };
        after_quote(after)?;
        return Ok(literal.to_owned());
    }
    if let Some(rest) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    after_quote(&rest[i + 1..])?;
                    return Ok(out);
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("the double-quoted value has no closing `\"` (values are one line)".into());
    }
    // Unquoted: a `#` after a blank starts a comment.
    let end = value
        .char_indices()
        .find(|&(i, c)| c == '#' && value[..i].ends_with(is_blank))
        .map_or(value.len(), |(i, _)| i);
    Ok(value[..end].trim_end_matches(is_blank).to_owned())
}

/// What may follow a closing quote: blanks and a comment.
fn after_quote(rest: &str) -> Result<(), String> {
    let rest = rest.trim_start_matches(is_blank);
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err("unexpected text after the closing quote (quote the whole value)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn one(line: &str) -> (String, String) {
        let vars = ok(line);
        assert_eq!(vars.len(), 1, "{line:?}: {vars:?}");
        vars.into_iter().next().unwrap()
    }

    fn value(line: &str) -> String {
        one(line).1
    }

    fn err(text: &str) -> LineError {
        match parse(text.as_bytes()) {
            Err(e) => e,
            Ok(vars) => panic!("{text:?} parsed as {vars:?}"),
        }
    }

    #[test]
    fn plain_pairs_in_order_with_blank_lines_and_comments() {
        let text = "# database\nDB_HOST=db.internal\n\n   \n  # indented comment\nDB_PORT=5432\nDB_HOST=override\n";
        assert_eq!(
            ok(text),
            [
                ("DB_HOST".into(), "db.internal".into()),
                ("DB_PORT".into(), "5432".into()),
                ("DB_HOST".into(), "override".into()),
            ]
        );
        assert!(ok("").is_empty());
        assert!(ok("\n\n# only comments\n").is_empty());
    }

    #[test]
    fn crlf_line_endings_and_a_bom_are_ignored() {
        assert_eq!(
            ok("\u{feff}A=1\r\nB='two'\r\nC=\"3\"\r\n# c\r\n\r\n"),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "3".into()),
            ]
        );
    }

    #[test]
    fn export_prefix_and_blanks_around_the_name() {
        assert_eq!(one("export TOKEN=abc"), ("TOKEN".into(), "abc".into()));
        assert_eq!(one("export\tTOKEN=abc"), ("TOKEN".into(), "abc".into()));
        assert_eq!(one("  TOKEN  =  abc  "), ("TOKEN".into(), "abc".into()));
        // A variable that happens to start with or be called `export`.
        assert_eq!(one("exported=1"), ("exported".into(), "1".into()));
        assert_eq!(one("export=1"), ("export".into(), "1".into()));
    }

    #[test]
    fn equals_signs_in_values_and_empty_values() {
        assert_eq!(
            value("URL=postgres://u:p@h/db?sslmode=require"),
            "postgres://u:p@h/db?sslmode=require"
        );
        assert_eq!(value("B64=YWJj=="), "YWJj==");
        assert_eq!(value("K==x"), "=x");
        assert_eq!(value("EMPTY="), "");
        assert_eq!(value("EMPTY=   "), "");
        assert_eq!(value("EMPTY=''"), "");
        assert_eq!(value("EMPTY=\"\""), "");
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(value(r"K='a \n b # c'"), r"a \n b # c");
        assert_eq!(value(r#"K='say "hi"'"#), r#"say "hi""#);
        assert_eq!(value("K='  padded  '  # comment"), "  padded  ");
        assert_eq!(value("K='$HOME'"), "$HOME");
    }

    #[test]
    fn double_quotes_have_escapes() {
        assert_eq!(value(r#"K="line1\nline2""#), "line1\nline2");
        assert_eq!(value(r#"K="a\"b\\c\td\re""#), "a\"b\\c\td\re");
        // Other backslashes stay: Windows paths and regexes survive.
        assert_eq!(value(r#"K="C:\dir\x""#), r"C:\dir\x");
        assert_eq!(
            value(r#"K="it's # not a comment" # but this is"#),
            "it's # not a comment"
        );
        assert_eq!(value(r#"K="ünïcödé""#), "ünïcödé");
    }

    #[test]
    fn unquoted_values_lose_trailing_blanks_and_comments() {
        assert_eq!(value("K=abc   "), "abc");
        assert_eq!(value("K=abc # comment"), "abc");
        assert_eq!(value("K=abc\t# comment"), "abc");
        assert_eq!(value("K=abc#def"), "abc#def");
        assert_eq!(value("K=#"), "#");
        assert_eq!(value("K=a b  c"), "a b  c");
        assert_eq!(value(r#"K=it's "fine""#), r#"it's "fine""#);
        assert_eq!(value("K=$OTHER"), "$OTHER");
    }

    #[test]
    fn bad_lines_name_the_line_and_the_problem() {
        let e = err("A=1\n\nthis line has no equals sign\n");
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("KEY=VALUE"), "{e}");
        assert_eq!(
            err("=value").problem,
            "the variable name before `=` is empty"
        );
        assert_eq!(err("A=1\n  =value").line, 2);
        assert!(err("MY KEY=1").problem.contains("blank"));
        assert!(err("K='unterminated").problem.contains("closing `'`"));
        assert!(err("K=\"unterminated").problem.contains("closing `\"`"));
        assert!(err("K=\"ends in a backslash\\").problem.contains("closing"));
        assert!(err("K='a'b").problem.contains("after the closing quote"));
        assert!(err("K=\"a\" b").problem.contains("after the closing quote"));
        let e = err("K=a\0b");
        assert!(e.problem.contains("NUL"), "{e}");
        assert_eq!(e.to_string(), format!("line 1: {}", e.problem));
    }

    #[test]
    fn errors_never_quote_the_value() {
        for text in [
            "hunter2",
            "export hunter2",
            "API KEY hunter2=x",
            "K='hunter2",
            "K=\"hunter2",
            "K='hunter2' hunter2",
            "K=hunter2\0",
        ] {
            let e = err(text);
            assert!(!e.to_string().contains("hunter2"), "{text:?}: {e}");
        }
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let e = parse(b"A=1\nB=2\nC=\xff\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("UTF-8"), "{e}");
    }
}
