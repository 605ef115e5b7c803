//! `tenantgate context add|use|remove|list` and `--context <name>`: the admin APIs an operator
//! works with, saved per user.
//!
//! The contexts file is meant to be copied, kept in dotfiles or pasted into an issue, so it never
//! holds a usable token: a token is sealed (ChaCha20-Poly1305) under a key kept in another file,
//! under the data folder, or the context only names the environment variable that holds it. The
//! sealed text is bound to its context's name, so an entry copied under another name does not open.
//! Both files are private to the user (0600, in 0700 folders), and one that others may read is
//! refused, as ssh refuses a readable private key.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::atomic_file::{replace, Access};
use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const HEADER: &str = "# tenantgate contexts (tenantgate context add|use|remove); tokens are sealed, see README \"Contexts\"";
/// Versioned so that another sealing scheme can be read beside this one later.
const SEALED_PREFIX: &str = "sealed:v1:";
const KEY_LEN: usize = 32;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    contexts: BTreeMap<String, ContextFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextFile {
    admin_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used: Option<String>,
}

/// The token `context add` was given.
pub enum TokenInput {
    Secret(String),
    /// The name of an environment variable, read at each use.
    Env(String),
    /// The gateway's admin API takes no token.
    None,
}

impl fmt::Debug for TokenInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenInput::Secret(_) => f.write_str("Secret(<redacted>)"),
            TokenInput::Env(var) => f.debug_tuple("Env").field(var).finish(),
            TokenInput::None => f.write_str("None"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Sealed,
    Env(String),
    None,
}

impl TokenKind {
    pub fn label(&self) -> String {
        match self {
            TokenKind::Sealed => "sealed".to_owned(),
            TokenKind::Env(var) => format!("env ${var}"),
            TokenKind::None => "none".to_owned(),
        }
    }
}

/// A context as `context list` shows it: never its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextView {
    pub name: String,
    pub admin_url: String,
    pub token: TokenKind,
    pub last_used: Option<String>,
    pub current: bool,
}

/// What a command needs to reach a context's admin API.
#[derive(Clone)]
pub struct Resolved {
    pub name: String,
    pub admin_url: String,
    pub token: Option<String>,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("name", &self.name)
            .field("admin_url", &self.admin_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The contexts file as loaded, and where it and its key live.
#[derive(Debug)]
pub struct ContextStore {
    path: PathBuf,
    key_path: PathBuf,
    file: StoreFile,
}

impl ContextStore {
    /// The store of the current user; a user with no contexts file has no contexts.
    pub fn open() -> anyhow::Result<ContextStore> {
        let config = user_dir("XDG_CONFIG_HOME", ".config")?;
        let data = user_dir("XDG_DATA_HOME", ".local/share")?;
        Self::open_at(
            config.join("tenantgate").join("contexts.toml"),
            data.join("tenantgate").join("contexts.key"),
        )
    }

    pub fn open_at(contexts: PathBuf, key: PathBuf) -> anyhow::Result<ContextStore> {
        let file = match read_private(&contexts)? {
            Some(text) => parse(&contexts, &text)?,
            None => StoreFile::default(),
        };
        Ok(ContextStore {
            path: contexts,
            key_path: key,
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    pub fn current(&self) -> Option<&str> {
        self.file.current.as_deref()
    }

    pub fn get(&self, name: &str) -> Option<ContextView> {
        self.file.contexts.get(name).map(|c| self.view(name, c))
    }

    pub fn list(&self) -> Vec<ContextView> {
        self.file
            .contexts
            .iter()
            .map(|(name, c)| self.view(name, c))
            .collect()
    }

    /// Adds (or with `replace`, replaces) a context and saves. Replacing is explicit so that a
    /// typo in a name cannot overwrite another gateway's token.
    pub fn add(
        &mut self,
        name: &str,
        admin_url: &str,
        token: TokenInput,
        replace: bool,
    ) -> anyhow::Result<()> {
        check_name(name)?;
        let url = admin_url.trim().trim_end_matches('/');
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            bail!("admin URL {admin_url:?}: give http://host:port or https://host:port");
        }
        if self.file.contexts.contains_key(name) && !replace {
            bail!("context {name} exists; --replace to change it");
        }
        let (token, token_env) = match token {
            TokenInput::Secret(secret) => {
                (Some(seal(&self.sealing_key()?, name, url, &secret)?), None)
            }
            TokenInput::Env(var) => {
                check_env_name(&var)?;
                (None, Some(var))
            }
            TokenInput::None => (None, None),
        };
        let context = ContextFile {
            admin_url: url.to_owned(),
            token,
            token_env,
            last_used: None,
        };
        self.update(|file| {
            file.contexts.insert(name.to_owned(), context);
            Ok(())
        })
    }

    pub fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        if !self.file.contexts.contains_key(name) {
            return Err(self.unknown(name));
        }
        self.update(|file| {
            file.contexts.remove(name);
            if file.current.as_deref() == Some(name) {
                file.current = None;
            }
            Ok(())
        })
    }

    pub fn use_context(&mut self, name: &str) -> anyhow::Result<()> {
        if !self.file.contexts.contains_key(name) {
            return Err(self.unknown(name));
        }
        self.update(|file| {
            if !file.contexts.contains_key(name) {
                bail!("context {name} was removed meanwhile");
            }
            file.current = Some(name.to_owned());
            Ok(())
        })
    }

    /// The URL and token of a context, and marks it used. Failing to record the use only warns:
    /// a store that cannot be written (a read-only dotfiles checkout) must still be usable.
    pub fn resolve(&mut self, name: &str) -> anyhow::Result<Resolved> {
        self.resolve_with(name, |var| std::env::var(var).ok())
    }

    /// `resolve`, with the environment to read a `token_env` from.
    fn resolve_with(
        &mut self,
        name: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Resolved> {
        let Some(context) = self.file.contexts.get(name) else {
            return Err(self.unknown(name));
        };
        let token = match (&context.token, &context.token_env) {
            (Some(sealed), _) => Some(self.open_token(name, &context.admin_url, sealed)?),
            (None, Some(var)) => Some(env(var).filter(|t| !t.is_empty()).ok_or_else(|| {
                anyhow!("context {name} takes its token from ${var}, which is not set")
            })?),
            (None, None) => None,
        };
        let resolved = Resolved {
            name: name.to_owned(),
            admin_url: context.admin_url.clone(),
            token,
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let used = self.update(|file| {
            if let Some(context) = file.contexts.get_mut(name) {
                context.last_used = Some(now);
            }
            Ok(())
        });
        if let Err(e) = used {
            crate::cli::output::warning(&format!(
                "the use of context {name} is not recorded: {e:#}"
            ));
        }
        Ok(resolved)
    }

    fn view(&self, name: &str, c: &ContextFile) -> ContextView {
        let token = match (&c.token, &c.token_env) {
            (Some(_), _) => TokenKind::Sealed,
            (None, Some(var)) => TokenKind::Env(var.clone()),
            (None, None) => TokenKind::None,
        };
        ContextView {
            name: name.to_owned(),
            admin_url: c.admin_url.clone(),
            token,
            last_used: c.last_used.clone(),
            current: self.file.current.as_deref() == Some(name),
        }
    }

    fn unknown(&self, name: &str) -> anyhow::Error {
        if self.file.contexts.is_empty() {
            return anyhow!(
                "no context {name}: {} has none yet (tenantgate context add)",
                self.path.display()
            );
        }
        let known: Vec<&str> = self.file.contexts.keys().map(String::as_str).collect();
        anyhow!("no context {name}; known: {}", known.join(", "))
    }

    /// Applies `change` to the file as it is on disk now (another shell may have added or removed
    /// a context since this one was loaded), writes it, and keeps it only once written.
    fn update(
        &mut self,
        change: impl FnOnce(&mut StoreFile) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut next = match read_private(&self.path)? {
            Some(text) => parse(&self.path, &text)?,
            None => StoreFile::default(),
        };
        change(&mut next)?;
        let body = toml::to_string(&next).context("cannot encode the contexts")?;
        write_private(&self.path, &format!("{HEADER}\n{body}"))?;
        self.file = next;
        Ok(())
    }

    fn read_key(&self) -> anyhow::Result<Option<LessSafeKey>> {
        let Some(text) = read_private(&self.key_path)? else {
            return Ok(None);
        };
        let bytes = STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == KEY_LEN)
            .ok_or_else(|| {
                anyhow!(
                    "{} is not a contexts key (32 bytes in base64)",
                    self.key_path.display()
                )
            })?;
        aead_key(&bytes).map(Some)
    }

    /// The key, made on first use. It is created exclusively: of two first `context add`s run at
    /// once, one makes it and the other reads it, so neither seals under a key that is then lost.
    fn sealing_key(&self) -> anyhow::Result<LessSafeKey> {
        if let Some(key) = self.read_key()? {
            return Ok(key);
        }
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow!("the system random generator failed"))?;
        let text = format!("{}\n", STANDARD.encode(bytes));
        match create_private(&self.key_path, &text) {
            Ok(()) => aead_key(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .read_key()?
                .ok_or_else(|| anyhow!("{} vanished as it was made", self.key_path.display())),
            Err(e) => {
                Err(anyhow::Error::new(e)
                    .context(format!("cannot create {}", self.key_path.display())))
            }
        }
    }

    fn open_token(&self, name: &str, url: &str, sealed: &str) -> anyhow::Result<String> {
        let Some(sealed) = sealed.strip_prefix(SEALED_PREFIX) else {
            bail!(
                "the token of context {name} in {} is not sealed ({SEALED_PREFIX}…); add the context again",
                self.path.display()
            );
        };
        let Some(key) = self.read_key()? else {
            bail!(
                "cannot open the token of context {name}: {} is missing; add the context again",
                self.key_path.display()
            );
        };
        open(&key, name, url, sealed).ok_or_else(|| {
            anyhow!(
                "the token of context {name} does not open with {} (was the key file replaced, or the entry's name or URL edited?); add the context again",
                self.key_path.display()
            )
        })
    }
}

/// Asks for a token without echoing it, or reads one line from a pipe, so that a token never has
/// to appear in a command line (shell history, `ps`).
pub fn read_token_interactively(name: &str) -> anyhow::Result<Option<String>> {
    use std::io::IsTerminal;
    let line = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!(
            "admin token for {name} (empty if the gateway has none): "
        ))
        .context("cannot read the token from the terminal")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the token from standard input")?;
        line
    };
    let token = line.trim();
    Ok((!token.is_empty()).then(|| token.to_owned()))
}

/// `$<xdg>` when it is an absolute path (the XDG rule: a relative one is ignored), else
/// `$HOME/<fallback>`.
fn user_dir(xdg: &str, fallback: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(xdg)
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        return Ok(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(fallback)),
        None => bail!("cannot tell where to keep contexts: neither ${xdg} nor $HOME is set"),
    }
}

fn parse(path: &Path, text: &str) -> anyhow::Result<StoreFile> {
    let file: StoreFile = toml::from_str(text)
        .map_err(|e| anyhow!("{} is not a valid contexts file:\n{e}", path.display()))?;
    for (name, context) in &file.contexts {
        if context.token.is_some() && context.token_env.is_some() {
            bail!(
                "{}: context {name} has both token and token_env; keep one",
                path.display()
            );
        }
    }
    Ok(file)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if !valid {
        bail!(
            "context name {name:?}: use 1 to 63 of a-z 0-9 _ . -, starting with a letter or digit"
        );
    }
    Ok(())
}

fn check_env_name(var: &str) -> anyhow::Result<()> {
    let valid = var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        bail!("{var:?} is not an environment variable name; give the name, like PROD_ADMIN_TOKEN");
    }
    Ok(())
}

/// The file's text, `None` when it does not exist. The mode is read from the opened file, so the
/// file checked is the file read.
fn read_private(path: &Path) -> anyhow::Result<Option<String>> {
    let cannot_read = || format!("cannot read {}", path.display());
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(cannot_read())),
    };
    let mode = file
        .metadata()
        .with_context(cannot_read)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{p} is accessible by others (mode {mode:04o}); run chmod 600 {p}",
            p = path.display()
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(cannot_read)?;
    Ok(Some(text))
}

/// Writes a file only its owner may read (`atomic_file::Access::Private`): the contexts, a pulled
/// tenant file with key hashes.
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    replace(path, text, Access::Private).with_context(|| format!("cannot write {}", path.display()))
}

/// Creates `path` 0600 with `text`, failing if it exists (folders made 0700).
fn create_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn aead_key(bytes: &[u8]) -> anyhow::Result<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| anyhow!("a contexts key is {KEY_LEN} bytes"))
}

/// Binds a sealed token to its context's name and admin URL: an entry copied under another name,
/// or pointed at another server by editing its URL, does not open, so the token is never sent
/// anywhere but where it was added for.
fn aad(name: &str, url: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("tenantgate-context:{name}\n{url}").into_bytes())
}

/// Nonces are random: a store seals a handful of tokens, far from the 2^48 where 96-bit random
/// nonces start to collide.
fn seal(key: &LessSafeKey, name: &str, url: &str, token: &str) -> anyhow::Result<String> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| anyhow!("the system random generator failed"))?;
    let mut data = token.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        aad(name, url),
        &mut data,
    )
    .map_err(|_| anyhow!("cannot seal the token of context {name}"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
}

/// `sealed` is the text after the prefix.
fn open(key: &LessSafeKey, name: &str, url: &str, sealed: &str) -> Option<String> {
    let bytes = STANDARD.decode(sealed).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = rest.to_vec();
    let plain = key.open_in_place(nonce, aad(name, url), &mut data).ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> ContextStore {
        ContextStore::open_at(
            dir.join("config/tenantgate/contexts.toml"),
            dir.join("data/tenantgate/contexts.key"),
        )
        .expect("open")
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    fn write_0600(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[test]
    fn sealed_tokens_are_private_and_open_again() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        let secret = TokenInput::Secret("s3cret-admin-token".into());
        s.add("prod", "http://127.0.0.1:9900/", secret, false)
            .expect("add");
        for d in ["config", "config/tenantgate", "data", "data/tenantgate"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(s.path()), 0o600);
        assert_eq!(mode(s.key_path()), 0o600);
        let text = std::fs::read_to_string(s.path()).expect("read");
        assert!(!text.contains("s3cret-admin-token"), "{text}");
        assert!(text.contains("token = \"sealed:v1:"), "{text}");
        let again = s.add("prod", "http://other", TokenInput::None, false);
        assert!(again.unwrap_err().to_string().contains("--replace"));

        let mut s = store(dir.path());
        assert_eq!(s.get("prod").expect("prod").last_used, None);
        let resolved = s.resolve("prod").expect("resolve");
        assert_eq!(resolved.admin_url, "http://127.0.0.1:9900");
        assert_eq!(resolved.token.as_deref(), Some("s3cret-admin-token"));
        assert!(!format!("{resolved:?}").contains("s3cret"));
        let view = store(dir.path()).get("prod").expect("prod");
        assert!(view.last_used.is_some());
        assert_eq!(view.token.label(), "sealed");
    }

    #[test]
    fn a_sealed_token_opens_only_under_its_own_name_and_key() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        s.add("a", "http://a", TokenInput::Secret("token-a".into()), false)
            .expect("add");
        let text = std::fs::read_to_string(s.path()).expect("read");
        let line = text
            .lines()
            .find(|l| l.starts_with("token = "))
            .expect("a token line");
        let forged = format!(
            "[contexts.a]\nadmin_url = \"http://a\"\n{line}\n\n[contexts.b]\nadmin_url = \"http://b\"\n{line}\n"
        );
        write_0600(s.path(), &forged);

        let mut s = store(dir.path());
        let a = s.resolve("a").expect("a opens");
        assert_eq!(a.token.as_deref(), Some("token-a"));
        let err = s.resolve("b").unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
        // Pointed at another server by editing its URL: the token is not opened for it.
        write_0600(
            s.path(),
            &format!("[contexts.a]\nadmin_url = \"http://evil\"\n{line}\n"),
        );
        let err = store(dir.path()).resolve("a").unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
        write_0600(
            s.path(),
            &format!("[contexts.a]\nadmin_url = \"http://a\"\n{line}\n"),
        );
        let mut s = store(dir.path());

        std::fs::remove_file(s.key_path()).expect("remove key");
        let err = s.resolve("a").unwrap_err().to_string();
        assert!(err.contains("is missing; add the context again"), "{err}");
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("contexts.toml");
        std::fs::write(&path, "").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = ContextStore::open_at(path, dir.path().join("contexts.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is accessible by others (mode 0644)"), "{err}");
        assert!(err.contains("run chmod 600"), "{err}");
    }

    #[test]
    fn removing_the_current_context_clears_it_and_unknown_names_list_the_known() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        assert!(s.add("Prod", "http://a", TokenInput::None, false).is_err());
        assert!(s.add("prod", "ftp://a", TokenInput::None, false).is_err());
        s.add("prod", "https://gw.example", TokenInput::None, false)
            .expect("add");
        s.add("staging", "http://10.0.0.2:9900", TokenInput::None, false)
            .expect("add");
        s.use_context("prod").expect("use");
        assert_eq!(store(dir.path()).current(), Some("prod"));
        let names: Vec<(String, bool)> =
            s.list().into_iter().map(|v| (v.name, v.current)).collect();
        let expected = [("prod".to_owned(), true), ("staging".to_owned(), false)];
        assert_eq!(names, expected);

        let err = s.use_context("dev").unwrap_err().to_string();
        assert!(err.contains("prod, staging"), "{err}");
        s.remove("prod").expect("remove");
        assert_eq!(s.current(), None);
        let s = store(dir.path());
        assert_eq!(s.current(), None);
        assert_eq!(s.list().len(), 1);
    }

    #[test]
    fn an_env_token_is_read_at_each_use() {
        const VAR: &str = "TENANTGATE_CONTEXT_TEST_ENV_TOKEN_7F3A";
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        s.add(
            "env",
            "http://127.0.0.1:9900",
            TokenInput::Env(VAR.into()),
            false,
        )
        .expect("add");
        assert!(!s.key_path().exists());
        assert_eq!(
            s.get("env").expect("env").token.label(),
            format!("env ${VAR}")
        );
        let err = s.resolve_with("env", |_| None).unwrap_err().to_string();
        assert!(err.contains("which is not set"), "{err}");
        let env = |var: &str| (var == VAR).then(|| "from-env".to_owned());
        let resolved = s.resolve_with("env", env).expect("resolve");
        assert_eq!(resolved.token.as_deref(), Some("from-env"));
    }

    #[test]
    fn an_unknown_field_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("contexts.toml");
        write_0600(
            &path,
            "[contexts.a]\nadmin_url = \"http://a\"\ncolour = \"red\"\n",
        );
        let err = ContextStore::open_at(path.clone(), dir.path().join("contexts.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("colour"), "{err}");
    }
}
