//! Certificates made by `openssl` (Debian package `openssl`) for a test, in
//! a directory of its own: CAs, and leaves they sign with the extensions a
//! test asks for (names, key usage). Valid for two days.

use std::path::Path;
use std::process::Command;

/// Runs `openssl` in `dir`; panics with its error output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run openssl (Debian package openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `name.pem` and `name.key`, subject `CN=pgsidecar test name`.
pub fn ca(dir: &Path, name: &str) {
    let (subject, key, pem) = (
        format!("/CN=pgsidecar test {name}"),
        format!("{name}.key"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject, "-keyout", &key, "-out",
            &pem,
        ],
    );
}

/// `name.crt` and `name.key`, subject `CN=pgsidecar test name`, signed by
/// the CA `ca`, with the X.509 extensions `ext` (`openssl x509 -extfile`
/// lines, e.g. `subjectAltName = DNS:localhost`).
pub fn leaf(dir: &Path, name: &str, ca: &str, ext: &str) {
    let subject = format!("/CN=pgsidecar test {name}");
    let (key, csr, crt, cnf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.cnf"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr,
        ],
    );
    std::fs::write(dir.join(&cnf), ext).unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &cnf,
            "-out",
            &crt,
        ],
    );
}
