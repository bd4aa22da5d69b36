//! What a lead is found by: its name and e-mail folded (lowercase, single spaces),
//! its phone as its last ten digits, however each was written.

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
