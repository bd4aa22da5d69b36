//! The one thing the service reads from a certificate itself: when it expires.
//! A small DER walk (RFC 5280, 4.1) rather than an X.509 parser.

/// The `notAfter` time of a DER-encoded X.509 certificate (RFC 5280, 4.1):
/// Certificate → tbsCertificate → [version], serialNumber, signature, issuer,
/// validity { notBefore, notAfter }.
pub(super) fn not_after(certificate: &[u8]) -> Option<time::OffsetDateTime> {
    const SEQUENCE: u8 = 0x30;
    let (certificate, _) = der(certificate, Some(SEQUENCE))?;
    let (tbs, _) = der(certificate, Some(SEQUENCE))?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest, Some(0xa0))?.1; // the explicit version
    }
    rest = der(rest, Some(0x02))?.1; // serialNumber
    rest = der(rest, Some(SEQUENCE))?.1; // signature
    rest = der(rest, Some(SEQUENCE))?.1; // issuer
    let (validity, _) = der(rest, Some(SEQUENCE))?;
    let (_, after_not_before) = der(validity, None)?;
    let tag = *after_not_before.first()?;
    let (value, _) = der(after_not_before, None)?;
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<u16>().ok();
    // UTCTime has two year digits (50–99 are 19xx), GeneralizedTime four.
    let (year, start) = match (tag, text.len()) {
        (0x17, 12) => {
            let year = digits(0..2)?;
            (if year < 50 { 2000 + year } else { 1900 + year }, 2)
        }
        (0x18, 14) => (digits(0..4)?, 4),
        _ => return None,
    };
    let field = |n: usize| {
        digits(start + 2 * n..start + 2 * n + 2).and_then(|value| u8::try_from(value).ok())
    };
    let date = time::Date::from_calendar_date(
        i32::from(year),
        time::Month::try_from(field(0)?).ok()?,
        field(1)?,
    )
    .ok()?;
    let time = time::Time::from_hms(field(2)?, field(3)?, field(4)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, time).assume_utc())
}

/// One DER element of `input` (of tag `tag`, when given): its contents and what
/// follows it.
fn der(input: &[u8], tag: Option<u8>) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if tag.is_some_and(|tag| tag != found) {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |length, byte| length << 8 | usize::from(*byte))
    };
    rest.split_at_checked(length)
}

#[cfg(test)]
mod tests {
    use super::not_after;
    use time::macros::datetime;

    fn certificate_until(end: time::OffsetDateTime) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = end;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_end_of_validity_is_read_from_the_certificate() {
        // Until 2049 as UTCTime, from 2050 as GeneralizedTime (RFC 5280).
        for end in [
            datetime!(2030-01-01 00:00:00 UTC),
            datetime!(2049-12-31 23:59:59 UTC),
            datetime!(2051-06-15 12:30:45 UTC),
        ] {
            assert_eq!(not_after(&certificate_until(end)), Some(end));
        }
    }

    #[test]
    fn a_truncated_certificate_has_no_end_rather_than_a_panic() {
        let der = certificate_until(datetime!(2030-01-01 00:00:00 UTC));
        for length in 0..der.len() {
            let _ = not_after(&der[..length]);
        }
        assert_eq!(not_after(b"not DER at all"), None);
    }
}
