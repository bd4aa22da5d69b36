//! What a lead is found by: its name and e-mail folded (lowercase, single spaces),
//! its phone as its last ten digits, however each was written; and a search.

use super::EncodedEvent;

/// Text folded for a case-insensitive match: lowercase (Cyrillic included), trimmed,
/// inner whitespace as single spaces.
pub fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !folded.is_empty() {
            folded.push(' ');
        }
        folded.extend(word.chars().flat_map(char::to_lowercase));
    }
    folded
}

/// The last ten digits of a phone number, however it is written (`+7 (999)
/// 000-11-22`, `89990001122`): what tells numbers apart whatever the country prefix.
pub fn phone_digits(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(10)..].iter().collect()
}

/// The keys a lead is searched by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchKeys {
    pub name: String,
    pub phone: String,
    pub email: String,
}

impl SearchKeys {
    pub fn of(name: &str, phone: &str, email: &str) -> Self {
        Self {
            name: fold(name),
            phone: phone_digits(phone),
            email: fold(email),
        }
    }
}

/// What a search matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchField {
    LeadId,
    /// The order id Roistat was answered, or the CRM's deal id.
    OrderId,
    /// The phone's last ten digits, however it is written.
    Phone,
    Email,
    /// The start of the name, whatever its case.
    Name,
    Visit,
}

impl SearchField {
    pub const ALL: [SearchField; 6] = [
        SearchField::LeadId,
        SearchField::OrderId,
        SearchField::Phone,
        SearchField::Email,
        SearchField::Name,
        SearchField::Visit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SearchField::LeadId => "lead_id",
            SearchField::OrderId => "order_id",
            SearchField::Phone => "phone",
            SearchField::Email => "email",
            SearchField::Name => "name",
            SearchField::Visit => "visit",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.as_str() == name)
    }

    /// A term as the stored search key it is compared with.
    pub fn normalize(self, term: &str) -> String {
        match self {
            SearchField::Phone => phone_digits(term),
            SearchField::Email | SearchField::Name => fold(term),
            SearchField::LeadId | SearchField::OrderId | SearchField::Visit => {
                term.trim().to_owned()
            }
        }
    }
}

/// A search of stored leads: newest first (by name, then newest first, for a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadSearch {
    /// The integrations searched (at least one).
    pub integrations: Vec<String>,
    pub field: SearchField,
    /// The normalised term (see [`SearchField::normalize`]); never empty.
    pub term: String,
    /// Where the previous page ended.
    pub after: Option<SearchCursor>,
    pub limit: u32,
}

/// Where a page of search results ended: the last lead's name key (for a name
/// search) and sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCursor {
    pub name: String,
    pub sequence: u64,
}

/// A lead a search found: its event, and what Roistat was answered for it.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundLead {
    pub event: EncodedEvent,
    pub order_id: Option<String>,
    pub deal_id: Option<String>,
    /// Its name as searched (folded), for the cursor of a name search.
    pub name_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_match_on_their_last_ten_digits() {
        for written in [
            "+7 (999) 000-11-22",
            "89990001122",
            "9990001122",
            "+79990001122",
        ] {
            assert_eq!(phone_digits(written), "9990001122", "{written}");
        }
        assert_eq!(phone_digits("112"), "112");
        assert_eq!(phone_digits("no digits"), "");
    }

    #[test]
    fn names_fold_whatever_their_case_and_spacing() {
        assert_eq!(fold("  Роберт   ИВАНОВ "), "роберт иванов");
        assert_eq!(fold("Robert@Example.COM"), "robert@example.com");
    }
}
