//! Development secrets: when a process is not given a secret it needs, it makes one once and
//! keeps it in a file of its data directory, so every process on that directory (and every
//! restart) uses the same one. Production configures the secret instead; the file is never
//! committed (`/data` is ignored).

use std::path::Path;

use rand::RngCore;

/// The secret kept in `file` (hex of 32 random bytes), made now if the file does not exist.
/// Safe when several processes start at once: the first to link its file wins, and the others
/// read the winner's.
pub fn load_or_create(file: &Path) -> std::io::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(file) {
        return Ok(existing.trim().to_owned());
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &secret)?;
    restrict_permissions(&tmp);
    let linked = std::fs::hard_link(&tmp, file);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(_) => Ok(std::fs::read_to_string(file)?.trim().to_owned()),
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("data").join("key");
        let first = load_or_create(&file).expect("made");
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create(&file).expect("read"), first);
    }
}
