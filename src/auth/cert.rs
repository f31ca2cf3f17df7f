//! The subject common name of a DER X.509 certificate, for `auth_type = cert` (the user name
//! must equal it). A minimal DER walk: bytes from the network are bounds-checked at every step
//! and anything unexpected gives `None`, never a panic.

/// One DER element: (tag, contents, rest after it).
pub(crate) fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &x in &b[..n] {
            len = (len << 8) | usize::from(x);
        }
        b = &b[n..];
        len
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// The subject's CN (UTF8String, PrintableString, IA5String or T61String), if present.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // Optional explicit [0] version.
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (tag, mut subject, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    while !subject.is_empty() {
        let (tag, mut rdn, next) = element(subject)?;
        subject = next;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, atv, next) = element(rdn)?;
            rdn = next;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = element(atv)?;
            if tag == 0x06 && oid == OID_CN {
                let (vtag, v, _) = element(value)?;
                if matches!(vtag, 0x0c | 0x13 | 0x16 | 0x14) {
                    return std::str::from_utf8(v).ok().map(str::to_string);
                }
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cn_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["x.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Olly");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app_user");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("app_user"));
    }

    #[test]
    fn garbage_gives_none() {
        assert_eq!(subject_common_name(b""), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }
}
