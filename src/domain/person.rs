//! Who a lead is: its phone in E.164 (read with libphonenumber's metadata), its
//! e-mail folded for matching, and the person that leads sharing either belong to.

use std::collections::HashMap;
use std::sync::Mutex;

use phonenumber::country::Id;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::LeadSource;

/// A region phone numbers written without a country code are read in: an ISO
/// 3166 code libphonenumber has metadata for (`RU`, `US`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhoneRegion(Id);

impl PhoneRegion {
    /// The region a code names, in any case; `None` for a code without metadata.
    pub fn from_code(code: &str) -> Option<Self> {
        let code = code.trim().to_ascii_uppercase();
        let id: Id = code.parse().ok()?;
        phonenumber::metadata::DATABASE.by_id(id.as_ref())?;
        Some(Self(id))
    }

    pub fn code(&self) -> &str {
        self.0.as_ref()
    }
}

/// How one integration's leads are matched to persons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonSettings {
    /// The region of phones written without a country code.
    pub region: PhoneRegion,
    pub matching: bool,
}

impl Default for PersonSettings {
    fn default() -> Self {
        Self {
            region: PhoneRegion(Id::RU),
            matching: true,
        }
    }
}

/// What kind of line a number is, as the metadata tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneKind {
    #[default]
    Unknown,
    Mobile,
    FixedLine,
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    Voip,
    PersonalNumber,
    Pager,
    Uan,
    Voicemail,
}

impl PhoneKind {
    pub const ALL: [PhoneKind; 12] = [
        PhoneKind::Unknown,
        PhoneKind::Mobile,
        PhoneKind::FixedLine,
        PhoneKind::FixedLineOrMobile,
        PhoneKind::TollFree,
        PhoneKind::PremiumRate,
        PhoneKind::SharedCost,
        PhoneKind::Voip,
        PhoneKind::PersonalNumber,
        PhoneKind::Pager,
        PhoneKind::Uan,
        PhoneKind::Voicemail,
    ];

    fn of(kind: phonenumber::Type) -> Self {
        use phonenumber::Type;
        match kind {
            Type::Mobile => PhoneKind::Mobile,
            Type::FixedLine => PhoneKind::FixedLine,
            Type::FixedLineOrMobile => PhoneKind::FixedLineOrMobile,
            Type::TollFree => PhoneKind::TollFree,
            Type::PremiumRate => PhoneKind::PremiumRate,
            Type::SharedCost => PhoneKind::SharedCost,
            Type::Voip => PhoneKind::Voip,
            Type::PersonalNumber => PhoneKind::PersonalNumber,
            Type::Pager => PhoneKind::Pager,
            Type::Uan => PhoneKind::Uan,
            Type::Voicemail => PhoneKind::Voicemail,
            _ => PhoneKind::Unknown,
        }
    }
}

/// A phone number read: its E.164 form and what the metadata says of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneNumber {
    /// `+79990001122`.
    pub e164: String,
    /// Whether the number is one the region's numbering plan assigns.
    pub valid: bool,
    /// The region's ISO code (`RU`); empty when the number fits none.
    pub region: String,
    pub kind: PhoneKind,
}

impl PhoneNumber {
    /// Reads a phone as written (`+7 (999) 000-11-22`, `89990001122`, `8 (800)
    /// 555-35-35`); one without a country code in `region`. `None` for text that is
    /// not a phone number.
    pub fn parse(raw: &str, region: Option<PhoneRegion>) -> Option<Self> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 64 {
            return None;
        }
        let key = (raw.to_owned(), region);
        if let Some(known) = cache().lookup(&key) {
            return known;
        }
        let read = read_phone(raw, region);
        cache().keep(key, read.clone());
        read
    }

    /// The number leads are matched by: its E.164 form when it is valid.
    pub fn match_key(&self) -> Option<&str> {
        self.valid.then_some(self.e164.as_str())
    }
}

/// [`PhoneNumber::parse`]'s work.
fn read_phone(raw: &str, region: Option<PhoneRegion>) -> Option<PhoneNumber> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 3 || digits.len() > 17 {
        return None;
    }
    // The library strips the default region's trunk prefix even from a number in
    // international form whose national part starts with it (`+7 812 …` read in
    // RU, `+44 113 …` read in the US). So a number in international form is read
    // in a region without a trunk prefix (Denmark's), and the national forms of
    // the +7 countries (8 or 7 and ten digits, or ten digits) are put in
    // international form first.
    let plus_seven = matches!(region.as_ref().map(PhoneRegion::code), Some("RU" | "KZ"))
        && !raw.starts_with('+')
        && match digits.len() {
            11 => digits.starts_with('8') || digits.starts_with('7'),
            10 => !digits.starts_with('0'),
            _ => false,
        };
    let number = if plus_seven {
        phonenumber::parse(Some(Id::DK), format!("+7{}", &digits[digits.len() - 10..]))
    } else if raw.starts_with('+') {
        phonenumber::parse(Some(Id::DK), raw)
    } else {
        phonenumber::parse(region.map(|region| region.0), raw)
    }
    .ok()?;
    let national = number.national();
    let e164 = if national.zeros() == 0 {
        format!("+{}{}", number.code().value(), national.value())
    } else {
        // Italy's leading zeros: the library's own formatter knows them.
        number.format().mode(phonenumber::Mode::E164).to_string()
    };
    let kind = number.number_type(&phonenumber::metadata::DATABASE);
    let region = number.country().id();
    Some(PhoneNumber {
        e164,
        valid: kind != phonenumber::Type::Unknown && region.is_some(),
        region: region.map(|id| id.as_ref().to_owned()).unwrap_or_default(),
        kind: PhoneKind::of(kind),
    })
}

/// Numbers read lately: a phone seen again (a returning person, a retry) is not
/// read twice. Bounded: emptied whole when full.
struct PhoneCache(Mutex<HashMap<PhoneKey, Option<PhoneNumber>>>);

/// A phone as written, and the region it is read in.
type PhoneKey = (String, Option<PhoneRegion>);

const PHONE_CACHE_ENTRIES: usize = 65_536;

impl PhoneCache {
    fn lookup(&self, key: &PhoneKey) -> Option<Option<PhoneNumber>> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn keep(&self, key: PhoneKey, value: Option<PhoneNumber>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= PHONE_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(key, value);
        }
    }
}

fn cache() -> &'static PhoneCache {
    static CACHE: std::sync::OnceLock<PhoneCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| PhoneCache(Mutex::new(HashMap::new())))
}

/// An e-mail address as leads are matched by it: trimmed, lowercased (local part
/// and domain alike; nothing provider-specific); `None` for text that is not an
/// address (one `@` between a non-empty local part and a dotted domain, no spaces).
pub fn email_key(raw: &str) -> Option<String> {
    let address = raw.trim();
    let (local, domain) = address.split_once('@')?;
    let usable = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && address.len() <= 254
        && !address.chars().any(char::is_whitespace);
    usable.then(|| address.to_lowercase())
}

/// What a lead is matched to a person by: its valid phone in E.164, its e-mail
/// folded. Empty when matching is off for its integration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// The person a lead belongs to, as an event carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonLink {
    pub person_id: u64,
    /// The person had a lead before this one.
    pub returning: bool,
    pub first_seen: OffsetDateTime,
}

/// Two persons found to be one: a lead linked them. The older one's id is kept;
/// the other's still resolves to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonsMerged {
    pub integration: String,
    pub kept_person_id: u64,
    pub merged_person_id: u64,
    /// The lead that linked them, and the phone or e-mail it shares with the
    /// merged person.
    pub lead_id: String,
    pub linked_by: String,
}

/// An operator cut a wrong link: the leads carrying `unlinked` left `person_id`
/// for a new person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonSplit {
    pub integration: String,
    pub person_id: u64,
    pub new_person_id: u64,
    /// The phone (E.164) or e-mail that no longer links them.
    pub unlinked: String,
    pub lead_ids: Vec<String>,
}

/// One lead of a person.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonLead {
    pub lead_id: String,
    pub sequence: u64,
    pub receive_time: OffsetDateTime,
    pub source: LeadSource,
    pub title: String,
    /// Its phone in E.164 (when valid) and e-mail, folded: what links it.
    pub phone_e164: String,
    pub email: String,
}

/// A person: leads of one integration that share a phone or an e-mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub integration: String,
    pub person_id: u64,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    pub lead_count: u64,
    /// The sequence of its latest lead.
    pub last_sequence: u64,
    /// Ids merged into this one (they resolve to it).
    pub aliases: Vec<u64>,
    /// Its leads, oldest first (only when asked for one person).
    pub leads: Vec<PersonLead>,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
}

/// Where a page of persons by last seen (newest first) starts: before the
/// latest lead of the previous page's last person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonCursor {
    pub before_sequence: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(raw: &str) -> Option<String> {
        PhoneNumber::parse(raw, PhoneRegion::from_code("RU")).map(|number| number.e164)
    }

    #[test]
    fn the_forms_roistat_sends_read_as_one_number() {
        for raw in [
            "+7 (999) 000-11-22",
            "89990001122",
            "79990001122",
            " +79990001122 ",
        ] {
            assert_eq!(e164(raw).as_deref(), Some("+79990001122"), "{raw}");
        }
        let number = PhoneNumber::parse("89990001122", PhoneRegion::from_code("ru")).unwrap();
        assert!(number.valid);
        assert_eq!(number.region, "RU");
        assert_eq!(number.kind, PhoneKind::Mobile);
    }

    #[test]
    fn numbers_whose_national_part_starts_with_the_trunk_prefix_are_read_right() {
        let number = PhoneNumber::parse("8 (800) 555-35-35", PhoneRegion::from_code("RU")).unwrap();
        assert_eq!(number.e164, "+78005553535");
        assert!(number.valid);
        assert_eq!(number.kind, PhoneKind::TollFree);
        for raw in [
            "+7 812 123-45-67",
            "88121234567",
            "78121234567",
            "(812) 123-45-67",
        ] {
            let number = PhoneNumber::parse(raw, PhoneRegion::from_code("RU")).unwrap();
            assert_eq!(number.e164, "+78121234567", "{raw}");
            assert_eq!(number.kind, PhoneKind::FixedLine, "{raw}");
        }
    }

    #[test]
    fn foreign_numbers_keep_their_country() {
        let us = PhoneNumber::parse("+1 650 253 0000", PhoneRegion::from_code("RU")).unwrap();
        assert_eq!(
            (us.e164.as_str(), us.region.as_str()),
            ("+16502530000", "US")
        );
        let gb = PhoneNumber::parse("020 7946 0958", PhoneRegion::from_code("GB")).unwrap();
        assert_eq!(gb.e164, "+442079460958");
        assert_eq!(gb.kind, PhoneKind::FixedLine);
        // A national part that starts with a trunk prefix digit stays whole.
        let leeds = PhoneNumber::parse("+44 113 496 0000", PhoneRegion::from_code("US")).unwrap();
        assert_eq!((leeds.e164.as_str(), leeds.valid), ("+441134960000", true));
    }

    #[test]
    fn garbage_has_no_number_and_an_invalid_one_no_match_key() {
        for raw in ["garbage", "", "12", "<script>alert(1)</script>"] {
            assert_eq!(e164(raw), None, "{raw}");
        }
        // Without a region, a number without its country code cannot be read.
        assert_eq!(PhoneNumber::parse("9990001122", None), None);
        let invalid = PhoneNumber::parse("+7 (555) 000-00-00", None).unwrap();
        assert_eq!(invalid.e164, "+75550000000");
        assert!(!invalid.valid);
        assert_eq!(invalid.match_key(), None);
    }

    #[test]
    fn regions_are_iso_codes_with_metadata() {
        assert_eq!(PhoneRegion::from_code("ru").unwrap().code(), "RU");
        assert_eq!(PhoneRegion::from_code("XX"), None);
        assert_eq!(PhoneRegion::from_code(""), None);
    }

    #[test]
    fn e_mails_match_whatever_their_case() {
        assert_eq!(
            email_key(" Olga@Example.com ").as_deref(),
            Some("olga@example.com")
        );
        for raw in [
            "olga",
            "@example.com",
            "olga@",
            "olga@localhost",
            "a b@c.d",
            "a@b@c.d",
        ] {
            assert_eq!(email_key(raw), None, "{raw}");
        }
    }
}
