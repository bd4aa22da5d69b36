//! Deals and the one rule for order ids: what Roistat is answered as `order_id`
//! for a lead, and when that answer is fixed for good.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use super::{DealDetails, DealUpdate, LeadKey};

/// What Roistat is answered as `order_id` for a new lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderIdMode {
    /// At once: the CRM's deal id if one was already reported, else the Roistat
    /// lead id.
    #[default]
    Lead,
    /// The CRM's deal id, once an internal service reports it; until then the
    /// lead waits (Roistat is told to retry).
    Crm,
}

impl OrderIdMode {
    pub const NAMES: [&'static str; 2] = ["lead", "crm"];

    /// The order id to answer for a lead that has none fixed yet; `None` while
    /// it must wait for the CRM's deal id.
    pub fn order_id<'a>(self, lead_id: &'a str, deal_id: Option<&'a str>) -> Option<&'a str> {
        deal_id.or_else(|| self.without_deal_id(lead_id))
    }

    /// What stands for the order id while no deal id is reported.
    pub fn without_deal_id(self, lead_id: &str) -> Option<&str> {
        match self {
            OrderIdMode::Lead => Some(lead_id),
            OrderIdMode::Crm => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderIdMode::Lead => "lead",
            OrderIdMode::Crm => "crm",
        }
    }
}

impl FromStr for OrderIdMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "lead" => Ok(OrderIdMode::Lead),
            "crm" => Ok(OrderIdMode::Crm),
            other => Err(format!("order id mode {other:?}: expected lead or crm")),
        }
    }
}

impl fmt::Display for OrderIdMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deal state of a lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Deal {
    pub key: LeadKey,
    /// The CRM's deal id, once reported.
    pub deal_id: Option<String>,
    /// What Roistat was answered as `order_id`; fixed once set.
    pub answered_order_id: Option<String>,
    pub details: DealDetails,
    pub update_time: OffsetDateTime,
}

impl Deal {
    /// The order id Roistat is, or will be, answered for this lead under `mode`;
    /// `None` while the service still waits for the CRM's deal id.
    pub fn order_id(&self, mode: OrderIdMode) -> Option<&str> {
        self.answered_order_id
            .as_deref()
            .or_else(|| mode.order_id(&self.key.lead_id, self.deal_id.as_deref()))
    }

    /// Whether the deal id can no longer change: Roistat was answered it.
    pub fn deal_id_is_fixed(&self) -> bool {
        self.deal_id.is_some() && self.deal_id == self.answered_order_id
    }
}

/// What the CRM reports about a lead's deal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DealReport {
    /// The CRM's deal id; `None` leaves it as it is.
    pub deal_id: Option<String>,
    pub update: DealUpdate,
}

/// An order as Roistat's export shows it: a lead's deal with what its lead says.
/// A lead is an order from the moment its order id is fixed: answered to Roistat,
/// or a deal id reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The id Roistat knows the order by: the answered order id, else the
    /// reported deal id.
    pub order_id: String,
    pub deal: Deal,
    /// The lead's visit: Roistat's `roistat` field.
    pub visit: String,
    /// The lead's title: the order's name until the CRM reports one.
    pub title: String,
    /// The lead's `created_date`.
    pub lead_create_time: Option<OffsetDateTime>,
    /// When the lead arrived.
    pub lead_receive_time: OffsetDateTime,
    /// When its order id was fixed (answered to Roistat, or reported in `crm` mode).
    pub fixed_time: Option<OffsetDateTime>,
    /// The manager Roistat chose for the lead (its `manager_id`); empty for none.
    pub lead_manager_id: String,
}

impl Order {
    /// The CRM's name for the deal, else the lead's title.
    pub fn name(&self) -> &str {
        self.deal.details.name.as_deref().unwrap_or(&self.title)
    }

    /// When the order was created: as the CRM says, else the lead's
    /// `created_date`, else when the lead arrived.
    pub fn date_create(&self) -> OffsetDateTime {
        self.deal
            .details
            .create_time
            .or(self.lead_create_time)
            .unwrap_or(self.lead_receive_time)
    }

    /// The manager: as the CRM reports it, else the one Roistat chose for the lead.
    pub fn manager_id(&self) -> Option<&str> {
        self.deal
            .details
            .manager_id
            .as_deref()
            .or(Some(self.lead_manager_id.as_str()).filter(|id| !id.is_empty()))
    }

    /// The reported status, else `default`.
    pub fn status<'a>(&'a self, default: &'a str) -> &'a str {
        self.deal.details.status.as_deref().unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deal(deal_id: Option<&str>, answered: Option<&str>) -> Deal {
        Deal {
            key: LeadKey::new("", "90"),
            deal_id: deal_id.map(str::to_owned),
            answered_order_id: answered.map(str::to_owned),
            details: DealDetails::default(),
            update_time: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_order_id_rule() {
        // Nothing reported: lead mode answers the lead id, crm mode waits.
        assert_eq!(deal(None, None).order_id(OrderIdMode::Lead), Some("90"));
        assert_eq!(deal(None, None).order_id(OrderIdMode::Crm), None);
        // A reported deal id wins in both modes until an answer is fixed.
        let reported = deal(Some("D-1"), None);
        assert_eq!(reported.order_id(OrderIdMode::Lead), Some("D-1"));
        assert_eq!(reported.order_id(OrderIdMode::Crm), Some("D-1"));
        assert!(!reported.deal_id_is_fixed());
        // Once answered, the answer stands whatever is reported later.
        let answered = deal(Some("D-2"), Some("90"));
        assert_eq!(answered.order_id(OrderIdMode::Crm), Some("90"));
        assert!(!answered.deal_id_is_fixed());
        assert!(deal(Some("D-2"), Some("D-2")).deal_id_is_fixed());
        assert_eq!("crm".parse::<OrderIdMode>(), Ok(OrderIdMode::Crm));
        assert!("deal".parse::<OrderIdMode>().is_err());
    }
}
