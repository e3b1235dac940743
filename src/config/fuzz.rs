//! A mutation fuzzer for configuration loading, run as a unit test: the
//! shipped example files and a set of DSNs, each holding the same password,
//! are mutated at random (characters that DSNs and YAML treat specially,
//! huge numbers, cut and repeated pieces) and loaded. No input may panic, and
//! no error may show the password.
//!
//! It runs for `PGSIDECAR_FUZZ_SECONDS` (default 2) with a fixed seed, or
//! `PGSIDECAR_FUZZ_SEED` to replay or explore another sequence; a failure
//! prints the input that caused it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Config, Flags};

const SECRET: &str = "Sup3r-s3cret";

const SPECIAL: &[&str] = &[
    "%",
    "%a",
    "%é",
    "é",
    "?",
    "#",
    "@",
    "/",
    ":",
    ",",
    "'",
    "\"",
    "\\",
    " ",
    "${",
    "}",
    "${X",
    "${}",
    "$${",
    "\n",
    "\n  ",
    "\t",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "&",
    "=",
    "*",
    "&a",
    "<<: ",
    "!!",
    "|",
    ">",
    "0x",
    "-1",
    "1e400",
    "18446744073709551615",
    "99999999999999999999",
    "ms",
    "s",
    "h",
    "m",
    "~",
    "null",
    "\u{0}",
    "\u{feff}",
    "sslmode=",
    "sslrootcert=",
    "password=",
    "postgresql://",
    "://",
    "host=",
    "port=",
];

/// xorshift64*: small, fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<String> {
    let dsns = [
        format!("postgresql://app:{SECRET}@db.internal:5432/app?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
        format!("postgres://app:{SECRET}@h/db?application_name=x&sslmode=require"),
        format!("host=db port=5432 user=app password={SECRET} dbname=app sslmode=require"),
        format!("host=db user=app password='{SECRET}' sslrootcert=/ca.pem"),
    ];
    let mut out = vec![
        include_str!("../../examples/pgsidecar.yaml")
            .replace("postgresql://pgsidecar@", &format!("postgresql://pgsidecar:{SECRET}@")),
        include_str!("../../examples/mluvme.yaml").to_string(),
    ];
    for d in &dsns {
        out.push(format!("datasource:\n  dsn: \"{d}\"\n"));
        out.push(format!("datasource:\n  dsn: {d}\ncollection:\n  interval: 15s\n"));
    }
    out
}

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 => {
                let piece = SPECIAL[rng.below(SPECIAL.len())];
                chars.splice(at..at, piece.chars());
            }
            1 if !chars.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(chars.len());
                let at = at.min(end);
                chars.drain(at..end);
            }
            2 if !chars.is_empty() => {
                let at = at.min(chars.len() - 1);
                let end = (at + 1 + rng.below(16)).min(chars.len());
                let piece: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, piece);
            }
            _ => {
                // A digit run becomes a huge number.
                if let Some(d) = chars.iter().skip(at).position(|c| c.is_ascii_digit()) {
                    let at = at + d;
                    chars.splice(at..at, "18446744073709551615".chars());
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// Loads `text`; the error text, if any.
fn load(text: &str, env: &BTreeMap<String, String>) -> Option<String> {
    Config::from_yaml(text, "fuzz.yaml", &Flags::default(), env, &[])
        .err()
        .map(|e| e.to_string())
}

#[test]
fn no_input_panics_or_shows_the_password() {
    let seconds: u64 = std::env::var("PGSIDECAR_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("PGSIDECAR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let env: BTreeMap<String, String> = [("DB_HOST", "db"), ("POD_IP", "10.0.0.7"), ("DB_PASSWORD", SECRET)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let seeds = seeds();
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut errors) = (0u64, 0u64);
    while Instant::now() < deadline || runs < 1000 {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base);
        let outcome = std::panic::catch_unwind(|| load(&input, &env));
        let outcome = match outcome {
            Ok(o) => o,
            Err(_) => panic!("seed {seed}, run {runs}: loading panicked on:\n{input:?}"),
        };
        if let Some(e) = outcome {
            errors += 1;
            if e.contains(SECRET) {
                panic!("seed {seed}, run {runs}: the error shows the password:\n{e}\ninput:\n{input:?}");
            }
        }
        runs += 1;
    }
    assert!(
        errors > runs / 10,
        "too few invalid inputs to mean anything: {errors} of {runs}"
    );
    eprintln!("config fuzz: {runs} inputs, {errors} rejected, seed {seed}");
}
