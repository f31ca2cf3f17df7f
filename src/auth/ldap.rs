//! LDAP options (`auth_ldap_options`, or the options of an HBA `ldap` line) as PostgreSQL and
//! PgBouncer 1.25 read them, checked once when the configuration is loaded.
//!
//! Two modes: simple bind (`ldapprefix` + user + `ldapsuffix` is the DN bound with the client's
//! password) and search+bind (bind as `ldapbinddn`/`ldapbindpasswd` or anonymously, search
//! `ldapbasedn` for `(ldapsearchattribute=user)` or `ldapsearchfilter` with `$username`, then bind
//! as the one entry found). Servers come from `ldapserver` (space-separated, tried in order),
//! `ldapport`, `ldapscheme`, or all of it from `ldapurl`. Pure: no sockets here; the bind itself
//! is `session::ldap`.

/// The search scope of search+bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The base entry only.
    Base,
    /// The base's children.
    One,
    /// The whole subtree (the default outside `ldapurl`).
    Sub,
}

/// How the DN to bind with the client's password is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `ldapprefix` + user + `ldapsuffix`.
    Simple {
        /// `ldapprefix`.
        prefix: String,
        /// `ldapsuffix`.
        suffix: String,
    },
    /// Search for the user's entry first.
    Search {
        /// `ldapbasedn`.
        base_dn: String,
        /// `ldapbinddn` (empty: anonymous search).
        bind_dn: String,
        /// `ldapbindpasswd`.
        bind_password: String,
        /// `ldapsearchfilter` (with `$username`), or `(ldapsearchattribute=$username)`.
        filter: String,
        /// The search scope.
        scope: Scope,
    },
}

/// Validated LDAP options.
#[derive(Clone, PartialEq, Eq)]
pub struct LdapOptions {
    /// `ldap` or `ldaps`.
    pub scheme: String,
    /// Host names or addresses, tried in order.
    pub servers: Vec<String>,
    /// `ldapport` (389, or 636 for ldaps).
    pub port: u16,
    /// `ldaptls=1`: StartTLS before binding.
    pub starttls: bool,
    /// How the user's DN is found.
    pub mode: Mode,
}

impl std::fmt::Debug for LdapOptions {
    // Never print ldapbindpasswd (configuration dumps and error logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Simple { prefix, suffix } => format!("simple bind {prefix}<user>{suffix}"),
            Mode::Search {
                base_dn,
                bind_dn,
                filter,
                scope,
                ..
            } => format!("search {base_dn} {scope:?} {filter} as \"{bind_dn}\""),
        };
        f.debug_struct("LdapOptions")
            .field("scheme", &self.scheme)
            .field("servers", &self.servers)
            .field("port", &self.port)
            .field("starttls", &self.starttls)
            .field("mode", &mode)
            .finish()
    }
}

/// The options as written, before the mode is decided.
#[derive(Default)]
struct Raw {
    scheme: Option<String>,
    server: Option<String>,
    port: Option<u16>,
    tls: bool,
    prefix: Option<String>,
    suffix: Option<String>,
    base_dn: Option<String>,
    bind_dn: Option<String>,
    bind_password: Option<String>,
    attribute: Option<String>,
    filter: Option<String>,
    scope: Option<Scope>,
}

impl LdapOptions {
    /// Parses `auth_ldap_options`: `name=value` pairs separated by spaces or commas; a value in
    /// double quotes may hold both (`""` is a quote).
    pub fn parse(text: &str) -> Result<LdapOptions, String> {
        LdapOptions::from_pairs(&split_pairs(text)?)
    }

    /// Builds the options from `(name, value)` pairs (an HBA line's, or [`LdapOptions::parse`]'s).
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<LdapOptions, String> {
        let mut raw = Raw::default();
        for (name, value) in pairs {
            let v = Some(value.clone());
            match name.as_str() {
                "ldaptls" => raw.tls = value == "1",
                "ldapscheme" => {
                    if value != "ldap" && value != "ldaps" {
                        return Err(format!("invalid ldapscheme value: \"{value}\""));
                    }
                    raw.scheme = v;
                }
                "ldapport" => {
                    raw.port = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|p| *p != 0)
                            .ok_or_else(|| format!("invalid LDAP port number: \"{value}\""))?,
                    )
                }
                "ldapserver" => raw.server = v,
                "ldapbinddn" => raw.bind_dn = v,
                "ldapbindpasswd" => raw.bind_password = v,
                "ldapsearchattribute" => raw.attribute = v,
                "ldapsearchfilter" => raw.filter = v,
                "ldapbasedn" => raw.base_dn = v,
                "ldapprefix" => raw.prefix = v,
                "ldapsuffix" => raw.suffix = v,
                "ldapurl" => apply_url(&mut raw, value)?,
                other => return Err(format!("invalid LDAP key parameter: \"{other}\"")),
            }
        }
        raw.finish()
    }

    /// Whether the connection is TLS (ldaps, or StartTLS with ldaptls=1).
    pub fn uses_tls(&self) -> bool {
        self.scheme == "ldaps" || self.starttls
    }

    /// The URLs to try, in order.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|h| {
                // An IPv6 literal needs brackets in a URL.
                let host = if h.contains(':') && !h.starts_with('[') {
                    format!("[{h}]")
                } else {
                    h.clone()
                };
                format!("{}://{host}:{}", self.scheme, self.port)
            })
            .collect()
    }
}

impl Raw {
    fn finish(self) -> Result<LdapOptions, String> {
        let search_keys = self.base_dn.is_some()
            || self.bind_dn.is_some()
            || self.bind_password.is_some()
            || self.attribute.is_some()
            || self.filter.is_some();
        let mode = if self.prefix.is_some() || self.suffix.is_some() {
            if search_keys {
                return Err(
                    "cannot use ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute, \
                     ldapsearchfilter, or ldapurl together with ldapprefix"
                        .to_string(),
                );
            }
            Mode::Simple {
                prefix: self.prefix.unwrap_or_default(),
                suffix: self.suffix.unwrap_or_default(),
            }
        } else if let Some(base_dn) = self.base_dn {
            if self.attribute.is_some() && self.filter.is_some() {
                return Err(
                    "cannot use ldapsearchattribute together with ldapsearchfilter".to_string(),
                );
            }
            let filter = match (self.filter, self.attribute) {
                (Some(f), _) => f,
                (None, a) => format!("({}=$username)", a.as_deref().unwrap_or("uid")),
            };
            Mode::Search {
                base_dn,
                bind_dn: self.bind_dn.unwrap_or_default(),
                bind_password: self.bind_password.unwrap_or_default(),
                filter,
                scope: self.scope.unwrap_or(Scope::Sub),
            }
        } else {
            return Err(
                "authentication method \"ldap\" requires argument \"ldapbasedn\", \
                 \"ldapprefix\", or \"ldapsuffix\" to be set"
                    .to_string(),
            );
        };
        let servers: Vec<String> = self
            .server
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            // PgBouncer would look up DNS SRV records of the base DN's domain; we do not.
            return Err("ldapserver is required (DNS SRV discovery is not supported)".to_string());
        }
        let scheme = self.scheme.unwrap_or_else(|| "ldap".to_string());
        let port = self
            .port
            .unwrap_or(if scheme == "ldaps" { 636 } else { 389 });
        Ok(LdapOptions {
            scheme,
            servers,
            port,
            starttls: self.tls,
            mode,
        })
    }
}

/// `ldap[s]://host[:port]/basedn[?attribute[?scope[?filter]]]` (RFC 4516), as OpenLDAP's
/// ldap_url_parse reads it for PgBouncer: an unnamed scope is `base`.
fn apply_url(raw: &mut Raw, url: &str) -> Result<(), String> {
    let bad = |why: &str| format!("could not parse LDAP URL \"{url}\": {why}");
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if scheme != "ldap" && scheme != "ldaps" {
        return Err(format!("unsupported LDAP URL scheme: {scheme}"));
    }
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (
            h,
            Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("bad port"))?,
            ),
        ),
        _ => (hostport, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut parts = path.splitn(4, '?');
    let dn = decode(parts.next().unwrap_or("")).ok_or_else(|| bad("bad escape"))?;
    let attr = decode(parts.next().unwrap_or("")).ok_or_else(|| bad("bad escape"))?;
    let scope = match parts.next().unwrap_or("") {
        "" | "base" => Scope::Base,
        "one" => Scope::One,
        "sub" => Scope::Sub,
        other => return Err(bad(&format!("bad scope \"{other}\""))),
    };
    let filter = decode(parts.next().unwrap_or("")).ok_or_else(|| bad("bad escape"))?;
    raw.scheme = Some(scheme.to_string());
    if !host.is_empty() {
        raw.server = Some(host.to_string());
    }
    raw.port = Some(port.unwrap_or(if scheme == "ldaps" { 636 } else { 389 }));
    if !dn.is_empty() {
        raw.base_dn = Some(dn);
    }
    // Only the first attribute of a list is used.
    if let Some(a) = attr.split(',').next().filter(|a| !a.is_empty()) {
        raw.attribute = Some(a.to_string());
    }
    raw.scope = Some(scope);
    if !filter.is_empty() {
        raw.filter = Some(filter);
    }
    Ok(())
}

/// Percent-decoding of one URL part; `None` for a malformed escape or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `name=value` pairs separated by whitespace or commas; quoted values keep both.
fn split_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("LDAP option \"{name}\" has no value"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        value.push('"');
                    }
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("LDAP option \"{name}\": unterminated quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if name.is_empty() || value.is_empty() {
            return Err(format!("LDAP option \"{name}\" has no value"));
        }
        out.push((name, value));
    }
}

/// PgBouncer's and PostgreSQL's guard for search+bind: characters that would change the filter.
pub fn user_fits_filter(user: &str) -> bool {
    !user.contains(['*', '(', ')', '\\', '/', '\0'])
}

/// The search filter for `user` (`$username` replaced everywhere).
pub fn filter_for(filter: &str, user: &str) -> String {
    filter.replace("$username", user)
}

#[cfg(test)]
mod tests;
