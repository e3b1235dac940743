//! A small SQL lexer, and the checks built on it for SQL that pgsidecar did
//! not write: the queries of the configuration (probes, freshness and
//! migration queries), checked at load, and the statement texts of
//! `pg_stat_statements` that `slow_queries.explain` plans.
//!
//! The lexer knows what PostgreSQL's does about where a token ends:
//! `--` and nested `/* */` comments, `'…'` literals (with `''`; `E'…'` with
//! backslash escapes; `B'…'`, `X'…'`, `N'…'`, `U&'…'`), `"quoted"`
//! identifiers, `$tag$…$tag$` dollar quotes, `$n` parameters, numbers,
//! punctuation and operators. It assumes `standard_conforming_strings = on`,
//! PostgreSQL's default since 9.1. It does not parse SQL: the checks look
//! at the tokens for what decides whether a text is one statement that only
//! reads, and the server's read-only transaction stays the real guard.
//!
//! [`check_query`] refuses, with the messages its unit tests list: an empty
//! text, more than one statement, a first keyword other than `SELECT`,
//! `WITH`, `VALUES` or `TABLE` (so DML, DDL, `COPY`, `CALL`, `DO`, `SET`, …),
//! a data-modifying `WITH` query or statement after `WITH`, row locks
//! (`FOR UPDATE`/`SHARE`), `SELECT … INTO` (creates a table), calls of the
//! functions in [`SIDE_EFFECTS`], `$0`, and texts that do not end (an open
//! literal, quoted identifier, dollar quote or comment).

use std::fmt;

/// Functions with effects beyond reading (a trailing `*` marks a prefix):
/// remote connections (`dblink*`), SQL run from a text (`crosstab*`,
/// `xpath_table`, `query_to_xml*`), signals to other sessions, settings,
/// sequences, advisory locks, notifications, server-wide actions, large
/// objects and statistics resets.
pub const SIDE_EFFECTS: &[&str] = &[
    "dblink*",
    "crosstab*",
    "xpath_table",
    "query_to_xml*",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "set_config",
    "nextval",
    "setval",
    "pg_advisory_*",
    "pg_try_advisory_*",
    "pg_notify",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_promote",
    "pg_logical_emit_message",
    "pg_stat_reset*",
    "pg_stat_statements_reset",
    "lo_*",
];

/// A token of SQL text; words are folded to lower case unless quoted.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Word {
        text: String,
        quoted: bool,
    },
    Param(u32),
    /// A string literal of any kind, dollar-quoted ones included.
    Literal,
    Number,
    /// One of `( ) [ ] , ; .`
    Punct(char),
    /// Any other operator, `::` included.
    Operator,
}

impl Token {
    /// An unquoted word (a keyword, or a name written without quotes).
    fn is_word(&self, w: &str) -> bool {
        matches!(self, Token::Word { text, quoted: false } if text == w)
    }

    fn word(&self) -> Option<&str> {
        match self {
            Token::Word { text, quoted: false } => Some(text),
            _ => None,
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub token: Token,
    pub at: usize,
}

/// Text that does not end where it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    /// "string literal", "quoted identifier", "dollar-quoted string", "comment".
    pub what: &'static str,
    /// Byte offset of its start.
    pub at: usize,
}

impl LexError {
    /// The message, counting characters from 1 as an editor does.
    pub fn message(&self, text: &str) -> String {
        let character = text[..self.at].chars().count() + 1;
        format!("has an unterminated {} (from character {character})", self.what)
    }
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn ident_continue(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

const OPERATOR_CHARS: &[u8] = b"+-*/<>=~!@#%^&|`?:";

/// The tokens of `text`; comments and whitespace are dropped.
pub fn tokens(text: &str) -> Result<Vec<Spanned>, LexError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let next = b.get(i + 1).copied();
        let token = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c == b'-' && next == Some(b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if c == b'/' && next == Some(b'*') {
            i = block_comment(b, i)?;
            continue;
        } else if c == b'\'' {
            i = quoted(b, i, b'\'', false, "string literal")?;
            Token::Literal
        } else if matches!(c, b'e' | b'E') && next == Some(b'\'') {
            i = quoted_from(b, i, i + 1, b'\'', true, "string literal")?;
            Token::Literal
        } else if matches!(c, b'b' | b'B' | b'x' | b'X' | b'n' | b'N') && next == Some(b'\'') {
            i = quoted_from(b, i, i + 1, b'\'', false, "string literal")?;
            Token::Literal
        } else if matches!(c, b'u' | b'U') && next == Some(b'&') && b.get(i + 2) == Some(&b'\'') {
            i = quoted_from(b, i, i + 2, b'\'', false, "string literal")?;
            Token::Literal
        } else if matches!(c, b'u' | b'U') && next == Some(b'&') && b.get(i + 2) == Some(&b'"') {
            let end = quoted_from(b, i, i + 2, b'"', false, "quoted identifier")?;
            let name = text[i + 3..end - 1].replace("\"\"", "\"");
            i = end;
            Token::Word {
                text: name,
                quoted: true,
            }
        } else if c == b'"' {
            let end = quoted(b, i, b'"', false, "quoted identifier")?;
            let name = text[i + 1..end - 1].replace("\"\"", "\"");
            i = end;
            Token::Word {
                text: name,
                quoted: true,
            }
        } else if c == b'$' && next.is_some_and(|d| d.is_ascii_digit()) {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            Token::Param(text[start + 1..i].parse().unwrap_or(u32::MAX))
        } else if c == b'$' {
            match dollar_tag(b, i) {
                Some(tag_end) => {
                    let tag = &b[i..tag_end];
                    let body = &b[tag_end..];
                    let close = body.windows(tag.len()).position(|w| w == tag).ok_or(LexError {
                        what: "dollar-quoted string",
                        at: start,
                    })?;
                    i = tag_end + close + tag.len();
                    Token::Literal
                }
                None => {
                    i += 1;
                    Token::Operator
                }
            }
        } else if ident_start(c) {
            while i < b.len() && ident_continue(b[i]) {
                i += 1;
            }
            Token::Word {
                text: text[start..i].to_lowercase(),
                quoted: false,
            }
        } else if c.is_ascii_digit() || (c == b'.' && next.is_some_and(|d| d.is_ascii_digit())) {
            while i < b.len() {
                let d = b[i];
                let exponent_sign =
                    matches!(d, b'+' | b'-') && matches!(b[i - 1], b'e' | b'E') && !text[start..i].starts_with("0x");
                if d.is_ascii_alphanumeric() || d == b'_' || d == b'.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            Token::Number
        } else if b"()[],;.".contains(&c) {
            i += 1;
            Token::Punct(c as char)
        } else if OPERATOR_CHARS.contains(&c) {
            // An operator run ends where a comment starts.
            while i < b.len()
                && OPERATOR_CHARS.contains(&b[i])
                && !(i > start && (b[i..].starts_with(b"--") || b[i..].starts_with(b"/*")))
            {
                i += 1;
            }
            Token::Operator
        } else {
            i += 1;
            Token::Operator
        };
        out.push(Spanned { token, at: start });
    }
    Ok(out)
}

/// The end of a nested `/* */` comment starting at `i`.
fn block_comment(b: &[u8], mut i: usize) -> Result<usize, LexError> {
    let start = i;
    let mut depth = 0;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Err(LexError {
        what: "comment",
        at: start,
    })
}

/// The end (just past the closing quote) of a quoted token whose opening
/// `quote` is at `i`. A doubled quote stands for one; with `backslash`, a
/// backslash escapes the next byte.
fn quoted(b: &[u8], open: usize, quote: u8, backslash: bool, what: &'static str) -> Result<usize, LexError> {
    quoted_from(b, open, open, quote, backslash, what)
}

/// As [`quoted`], for a token with a prefix (`E'`, `U&"`) that starts at `start`.
fn quoted_from(
    b: &[u8],
    start: usize,
    open: usize,
    quote: u8,
    backslash: bool,
    what: &'static str,
) -> Result<usize, LexError> {
    let mut i = open + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Ok(i + 1);
            }
        } else {
            i += 1;
        }
    }
    Err(LexError { what, at: start })
}

/// The end of a dollar-quote tag (`$$`, `$tag$`) starting at `i`, if one does.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && ident_start(b[j]) {
        j += 1;
        while j < b.len() && ident_continue(b[j]) && b[j] != b'$' {
            j += 1;
        }
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

/// A user's query, as it passed [`check_query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The text without a trailing `;` and the whitespace around it.
    pub text: String,
    /// The number of parameters: the highest `$n` (0: none).
    pub params: u32,
}

/// What the tokens of one text show.
struct Shape {
    /// The text up to the end of the first statement.
    text_end: usize,
    /// Statements with at least one token.
    statements: usize,
    /// The first word, leading parentheses skipped (`None`: not a word).
    first: Option<String>,
    /// What the first token is, for a message when it is not a word.
    first_shown: String,
    /// After `WITH`: the statement's own keyword.
    main: Option<String>,
    /// A data-modifying `WITH` query: its name (if found) and its keyword.
    writable: Option<(Option<String>, String)>,
    /// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE`.
    locking: Option<String>,
    /// An `INTO` at the top level of the first statement.
    into: bool,
    /// Calls of [`SIDE_EFFECTS`] functions, as written (folded).
    calls: Vec<String>,
    params: u32,
    param_zero: bool,
}

const MAIN: &[&str] = &["select", "values", "table", "insert", "update", "delete", "merge"];
const DML: &[&str] = &["insert", "update", "delete", "merge"];

fn side_effect(name: &str) -> bool {
    SIDE_EFFECTS.iter().any(|f| match f.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *f,
    })
}

fn shape(text: &str) -> Result<Shape, LexError> {
    let all = tokens(text)?;
    let mut statements = 0;
    let mut text_end = text.len();
    let mut first_stmt: Vec<&Spanned> = Vec::new();
    let mut current = 0;
    for t in &all {
        if t.token == Token::Punct(';') {
            if current > 0 {
                statements += 1;
                if statements == 1 {
                    text_end = t.at;
                }
            }
            current = 0;
        } else {
            if statements == 0 {
                first_stmt.push(t);
            }
            current += 1;
        }
    }
    if current > 0 {
        statements += 1;
    }
    let toks: Vec<&Token> = first_stmt.iter().map(|s| &s.token).collect();
    let lead = toks.iter().take_while(|t| **t == &Token::Punct('(')).count();
    let first = toks.get(lead).and_then(|t| t.word()).map(str::to_string);
    let first_shown = match first_stmt.get(lead) {
        Some(s) => {
            let rest = &text[s.at..];
            rest.split(|c: char| c.is_whitespace() || c == '(' || c == ';')
                .next()
                .unwrap_or(rest)
                .to_string()
        }
        None => String::new(),
    };

    // Depth of each token: parentheses and brackets.
    let mut depth = Vec::with_capacity(toks.len());
    let mut d: i32 = 0;
    for t in &toks {
        if matches!(t, Token::Punct(')' | ']')) {
            d -= 1;
        }
        depth.push(d);
        if matches!(t, Token::Punct('(' | '[')) {
            d += 1;
        }
    }
    let top = depth.get(lead).copied().unwrap_or(0);

    let mut main = None;
    if first.as_deref() == Some("with") {
        for (i, t) in toks.iter().enumerate().skip(lead + 1) {
            let Some(w) = t.word() else { continue };
            if depth[i] != top || !MAIN.contains(&w) {
                continue;
            }
            // `insert`, `update`, `delete`, `merge` are not reserved: a WITH
            // query may be named so, and then `AS` or its columns follow.
            let follows = toks.get(i + 1);
            let a_name = DML.contains(&w) && follows.is_some_and(|n| n.is_word("as") || **n == Token::Punct('('));
            if !a_name {
                main = Some(w.to_string());
                break;
            }
        }
    }

    let mut writable = None;
    let mut locking = None;
    let mut into = false;
    let mut calls = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        // `AS [NOT] [MATERIALIZED] ( DML`: a data-modifying WITH query.
        if t.is_word("as") && writable.is_none() {
            let mut j = i + 1;
            while toks
                .get(j)
                .is_some_and(|t| t.is_word("not") || t.is_word("materialized"))
            {
                j += 1;
            }
            if toks.get(j) == Some(&&Token::Punct('('))
                && let Some(w) = toks.get(j + 1).and_then(|t| t.word())
                && DML.contains(&w)
            {
                writable = Some((cte_name(&toks, i), w.to_string()));
            }
        }
        if t.is_word("for") && locking.is_none() {
            let words: Vec<&str> = toks[i + 1..].iter().take(3).map_while(|t| t.word()).collect();
            let clause = match words.as_slice() {
                ["update", ..] => Some("FOR UPDATE"),
                ["share", ..] => Some("FOR SHARE"),
                ["no", "key", "update", ..] => Some("FOR NO KEY UPDATE"),
                ["key", "share", ..] => Some("FOR KEY SHARE"),
                _ => None,
            };
            locking = clause.map(str::to_string);
        }
        if t.is_word("into") && depth[i] == top {
            into = true;
        }
        if let Token::Word { text, .. } = t
            && toks.get(i + 1) == Some(&&Token::Punct('('))
            && side_effect(text)
            && !calls.contains(text)
        {
            calls.push(text.clone());
        }
    }
    let mut params = 0;
    let mut param_zero = false;
    for t in &all {
        if let Token::Param(n) = t.token {
            params = params.max(n);
            param_zero |= n == 0;
        }
    }
    Ok(Shape {
        text_end,
        statements,
        first,
        first_shown,
        main,
        writable,
        locking,
        into,
        calls,
        params,
        param_zero,
    })
}

/// The name of the WITH query whose `AS` is at `as_at`: the word before it,
/// or before its column list.
fn cte_name(toks: &[&Token], as_at: usize) -> Option<String> {
    let mut j = as_at.checked_sub(1)?;
    if toks[j] == &Token::Punct(')') {
        let mut depth = 0;
        loop {
            match toks[j] {
                Token::Punct(')') => depth += 1,
                Token::Punct('(') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j = j.checked_sub(1)?;
        }
        j = j.checked_sub(1)?;
    }
    match toks[j] {
        Token::Word { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Why a text is not one statement that only reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Empty,
    Unterminated(String),
    Several,
    NotAQuery(String),
    ChangesData(String),
    LocksRows(String),
    CreatesTable,
    Calls(String),
    ParamZero,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Empty => write!(f, "must not be empty"),
            Refusal::Unterminated(m) => write!(f, "{m}"),
            Refusal::Several => write!(f, "must be a single statement: remove the ';' between statements"),
            Refusal::NotAQuery(first) => write!(
                f,
                "must be a query (SELECT, WITH, VALUES or TABLE), not {}",
                shown(first)
            ),
            Refusal::ChangesData(what) => write!(f, "must not change data: {what}"),
            Refusal::LocksRows(clause) => write!(f, "must not lock rows: {clause} takes row locks"),
            Refusal::CreatesTable => write!(f, "must not create a table: SELECT … INTO creates one"),
            Refusal::Calls(name) => write!(f, "must not call {name}(): it has side effects beyond reading"),
            Refusal::ParamZero => write!(f, "has $0: parameters are numbered from $1"),
        }
    }
}

/// A word as a message quotes it: at most 32 characters.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(32).collect();
    format!("{cut:?}")
}

/// Checks that `text` is one statement that only reads; returns it without
/// a trailing `;`, and its parameter count.
pub fn check_query(text: &str) -> Result<Query, Refusal> {
    let s = shape(text).map_err(|e| Refusal::Unterminated(e.message(text)))?;
    if s.statements == 0 {
        return Err(Refusal::Empty);
    }
    if s.statements > 1 {
        return Err(Refusal::Several);
    }
    let first = s.first.clone().unwrap_or_default();
    if !["select", "with", "values", "table"].contains(&first.as_str()) {
        let shown = if s.first.is_some() {
            first.to_uppercase()
        } else {
            s.first_shown.clone()
        };
        return Err(Refusal::NotAQuery(shown));
    }
    refuse_writes(&s)?;
    Ok(Query {
        text: text[..s.text_end].trim().to_string(),
        params: s.params,
    })
}

fn refuse_writes(s: &Shape) -> Result<(), Refusal> {
    if let Some((name, kind)) = &s.writable {
        let name = name.as_deref().map_or(String::new(), |n| format!(" {n:?}"));
        return Err(Refusal::ChangesData(format!(
            "the WITH query{name} is {} (a data-modifying WITH)",
            kind.to_uppercase()
        )));
    }
    if let Some(main) = &s.main
        && DML.contains(&main.as_str())
    {
        return Err(Refusal::ChangesData(format!(
            "the statement after WITH is {}",
            main.to_uppercase()
        )));
    }
    if let Some(clause) = &s.locking {
        return Err(Refusal::LocksRows(clause.clone()));
    }
    if s.into {
        return Err(Refusal::CreatesTable);
    }
    if let Some(name) = s.calls.first() {
        return Err(Refusal::Calls(name.clone()));
    }
    if s.param_zero {
        return Err(Refusal::ParamZero);
    }
    Ok(())
}

/// Why a statement text from `pg_stat_statements` is not planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It does not end: cut off.
    Truncated,
    /// Not a query or DML: `SET`, `BEGIN`, DDL, `EXPLAIN`, ….
    Utility,
    /// It would lock rows, create a table or call a function with side
    /// effects if it ran (it never runs, but pgsidecar does not plan it either).
    Refused(String),
}

impl Skip {
    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::Truncated => "truncated",
            Skip::Utility => "utility",
            Skip::Refused(_) => "refused",
        }
    }
}

/// Whether a statement text can be planned with `EXPLAIN` (never executed):
/// one query or data-modifying statement. DML is planned too: `EXPLAIN`
/// without `ANALYZE` does not run it, and a read-only transaction allows it.
pub fn explainable(text: &str) -> Result<Query, Skip> {
    let s = shape(text).map_err(|_| Skip::Truncated)?;
    if s.statements != 1 {
        return Err(Skip::Utility);
    }
    let first = s.first.as_deref().unwrap_or("");
    if ![
        "select", "with", "values", "table", "insert", "update", "delete", "merge",
    ]
    .contains(&first)
    {
        return Err(Skip::Utility);
    }
    if let Some(clause) = &s.locking {
        return Err(Skip::Refused(Refusal::LocksRows(clause.clone()).to_string()));
    }
    if first == "select" && s.into {
        return Err(Skip::Refused(Refusal::CreatesTable.to_string()));
    }
    if let Some(name) = s.calls.first() {
        return Err(Skip::Refused(Refusal::Calls(name.clone()).to_string()));
    }
    Ok(Query {
        text: text[..s.text_end].trim().to_string(),
        params: s.params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(q: &str) -> String {
        match check_query(q) {
            Ok(q) => panic!("accepted: {q:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn ok(q: &str) -> Query {
        check_query(q).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    #[test]
    fn the_lexer_knows_where_tokens_end() {
        let t = tokens("SELECT 'a;b', E'it\\'s;', $x$ ; $y$ $x$, \"semi;colon\", $1::int -- ;\n/* ; /* ; */ */ 1.5e-3")
            .unwrap();
        let kinds: Vec<Token> = t.into_iter().map(|s| s.token).collect();
        assert_eq!(
            kinds,
            vec![
                Token::Word {
                    text: "select".into(),
                    quoted: false
                },
                Token::Literal,
                Token::Punct(','),
                Token::Literal,
                Token::Punct(','),
                Token::Literal,
                Token::Punct(','),
                Token::Word {
                    text: "semi;colon".into(),
                    quoted: true
                },
                Token::Punct(','),
                Token::Param(1),
                Token::Operator,
                Token::Word {
                    text: "int".into(),
                    quoted: false
                },
                Token::Number,
            ]
        );
        // `$` inside a name is part of it; `''` inside a literal is a quote.
        assert_eq!(tokens("a$b 'it''s'").unwrap().len(), 2);
        assert_eq!(
            tokens("U&\"d\\0061t\"").unwrap()[0].token,
            Token::Word {
                text: "d\\0061t".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn queries_that_only_read_pass_without_their_semicolon() {
        assert_eq!(
            ok("  SELECT * FROM messages WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2 ;  \n"),
            Query {
                text: "SELECT * FROM messages WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2".into(),
                params: 2
            }
        );
        assert_eq!(ok("select ';' -- and ; more").text, "select ';' -- and ; more");
        assert_eq!(ok("SELECT $x$;$x$, 'a'';'").params, 0);
        assert_eq!(ok("(SELECT 1) UNION (SELECT 2)").params, 0);
        assert_eq!(ok("WITH t AS (SELECT 1) SELECT * FROM t").params, 0);
        assert_eq!(
            ok("WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM t) SELECT * FROM t").params,
            0
        );
        // Names that look like keywords are names.
        ok("WITH update AS (SELECT 1) SELECT * FROM update");
        ok("SELECT \"nextval\" FROM t");
        ok("SELECT nextval_count FROM t");
        ok("SELECT substring(note FROM 1 FOR 3) FROM t");
        ok("SELECT 'FOR UPDATE', 'set_config(x)' FROM t");
        ok("SELECT * FROM t WHERE id IN (SELECT id FROM u)");
        ok("TABLE users");
        ok("VALUES (1)");
    }

    /// The safety list of issue 11, one refusal each, with its message.
    #[test]
    fn every_refusal_has_its_message() {
        let cases = [
            ("", "must not be empty"),
            (" ; -- nothing\n", "must not be empty"),
            (
                "SELECT 1; SELECT 2",
                "must be a single statement: remove the ';' between statements",
            ),
            (
                "SELECT 1; DROP TABLE messages",
                "must be a single statement: remove the ';' between statements",
            ),
            (
                "INSERT INTO log VALUES (1)",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"INSERT\"",
            ),
            (
                "update users SET level = 'x'",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"UPDATE\"",
            ),
            (
                "DELETE FROM messages",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"DELETE\"",
            ),
            (
                "MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"MERGE\"",
            ),
            (
                "TRUNCATE messages",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"TRUNCATE\"",
            ),
            (
                "CREATE TABLE t (id int)",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"CREATE\"",
            ),
            (
                "DROP INDEX idx_messages_user_created",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"DROP\"",
            ),
            (
                "ALTER TABLE t ADD c int",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"ALTER\"",
            ),
            (
                "COPY messages TO '/tmp/x'",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"COPY\"",
            ),
            (
                "COPY (SELECT 1) TO STDOUT",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"COPY\"",
            ),
            (
                "EXPLAIN SELECT 1",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"EXPLAIN\"",
            ),
            (
                "CALL proc()",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"CALL\"",
            ),
            (
                "DO $$ BEGIN PERFORM 1; END $$",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"DO\"",
            ),
            (
                "SET statement_timeout = 0",
                "must be a query (SELECT, WITH, VALUES or TABLE), not \"SET\"",
            ),
            ("42", "must be a query (SELECT, WITH, VALUES or TABLE), not \"42\""),
            (
                "WITH gone AS (DELETE FROM messages RETURNING *) SELECT count(*) FROM gone",
                "must not change data: the WITH query \"gone\" is DELETE (a data-modifying WITH)",
            ),
            (
                "WITH a(x) AS MATERIALIZED (UPDATE users SET level = 'x' RETURNING id) SELECT * FROM a",
                "must not change data: the WITH query \"a\" is UPDATE (a data-modifying WITH)",
            ),
            (
                "WITH a AS (SELECT 1), b AS NOT MATERIALIZED (INSERT INTO t VALUES (1) RETURNING 1) TABLE b",
                "must not change data: the WITH query \"b\" is INSERT (a data-modifying WITH)",
            ),
            (
                "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a",
                "must not change data: the statement after WITH is INSERT",
            ),
            (
                "WITH a AS (SELECT 1) DELETE FROM t",
                "must not change data: the statement after WITH is DELETE",
            ),
            (
                "SELECT * FROM users FOR UPDATE",
                "must not lock rows: FOR UPDATE takes row locks",
            ),
            (
                "SELECT * FROM users FOR NO KEY UPDATE SKIP LOCKED",
                "must not lock rows: FOR NO KEY UPDATE takes row locks",
            ),
            (
                "SELECT * FROM users FOR SHARE",
                "must not lock rows: FOR SHARE takes row locks",
            ),
            (
                "SELECT * FROM users FOR KEY SHARE",
                "must not lock rows: FOR KEY SHARE takes row locks",
            ),
            (
                "SELECT * INTO backup FROM users",
                "must not create a table: SELECT … INTO creates one",
            ),
            (
                "SELECT dblink('host=x', 'DELETE FROM t')",
                "must not call dblink(): it has side effects beyond reading",
            ),
            (
                "SELECT * FROM dblink_exec('host=x', 'DELETE FROM t')",
                "must not call dblink_exec(): it has side effects beyond reading",
            ),
            (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
                "must not call pg_terminate_backend(): it has side effects beyond reading",
            ),
            (
                "SELECT pg_catalog.set_config('search_path', 'x', false)",
                "must not call set_config(): it has side effects beyond reading",
            ),
            (
                "SELECT NEXTVAL ('messages_id_seq')",
                "must not call nextval(): it has side effects beyond reading",
            ),
            (
                "SELECT \"pg_advisory_lock\"(1)",
                "must not call pg_advisory_lock(): it has side effects beyond reading",
            ),
            (
                "SELECT 1 FROM t WHERE pg_try_advisory_xact_lock(/* x */ 1)",
                "must not call pg_try_advisory_xact_lock(): it has side effects beyond reading",
            ),
            (
                "SELECT * FROM t WHERE id = $0",
                "has $0: parameters are numbered from $1",
            ),
            ("SELECT 'open", "has an unterminated string literal (from character 8)"),
            (
                "SELECT E'it\\'s",
                "has an unterminated string literal (from character 8)",
            ),
            (
                "SELECT \"col",
                "has an unterminated quoted identifier (from character 8)",
            ),
            (
                "SELECT $f$ body",
                "has an unterminated dollar-quoted string (from character 8)",
            ),
            ("SELECT 1 /* /* */", "has an unterminated comment (from character 10)"),
            (
                "SELECT 'ř' || 'open",
                "has an unterminated string literal (from character 15)",
            ),
        ];
        for (q, message) in cases {
            assert_eq!(refused(q), message, "{q}");
        }
    }

    #[test]
    fn statement_texts_are_sorted_into_plannable_and_skipped() {
        assert_eq!(explainable("SELECT * FROM t WHERE id = $1").unwrap().params, 1);
        assert_eq!(explainable("UPDATE t SET v = $1 WHERE id = $2").unwrap().params, 2);
        assert!(explainable("WITH a AS (DELETE FROM t RETURNING 1) SELECT * FROM a").is_ok());
        assert_eq!(explainable("SELECT 'cut off"), Err(Skip::Truncated));
        for utility in [
            "SET search_path = x",
            "BEGIN",
            "EXPLAIN SELECT 1",
            "CREATE INDEX i ON t (v)",
            "VACUUM t",
        ] {
            assert_eq!(explainable(utility), Err(Skip::Utility), "{utility}");
        }
        assert_eq!(explainable("SELECT 1; SELECT 2"), Err(Skip::Utility));
        assert_eq!(explainable("SELECT nextval($1)").unwrap_err().reason(), "refused");
        assert_eq!(
            explainable("SELECT * FROM t FOR UPDATE").unwrap_err().reason(),
            "refused"
        );
    }
}
