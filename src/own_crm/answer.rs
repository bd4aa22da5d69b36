//! The answers Roistat expects, as JSON shapes.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::{Client, Manager, Money, Order, SchemeEntry};

/// `{"status":"ok","order_id":"..."}`: the answer that stops Roistat's retries of a lead.
#[derive(Debug, Serialize)]
pub struct OrderAnswer<'a> {
    pub status: &'static str,
    pub order_id: &'a str,
}

impl<'a> OrderAnswer<'a> {
    pub fn ok(order_id: &'a str) -> Self {
        Self {
            status: "ok",
            order_id,
        }
    }
}

/// `{"status":"ok","task_id":"..."}` and the like: an action answered with the id
/// this service gave the record.
#[derive(Debug, Serialize)]
pub struct IdAnswer<'a> {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<&'a str>,
}

impl<'a> IdAnswer<'a> {
    /// `{"status":"ok","task_id":"..."}`.
    pub fn task(id: &'a str) -> Self {
        Self {
            status: "ok",
            task_id: Some(id),
            call_id: None,
        }
    }

    /// `{"status":"ok","call_id":"..."}`.
    pub fn call(id: &'a str) -> Self {
        Self {
            status: "ok",
            task_id: None,
            call_id: Some(id),
        }
    }
}

/// `pagination` of an export page.
#[derive(Debug, Serialize)]
pub struct Pagination {
    pub total_count: u64,
    pub limit: u64,
}

/// An order as `action=export` lists it. What is not known is `null`, as the
/// public receivers send it (yii2-roistat's `OrderEntity`, the 1C-Bitrix module):
/// a `0` or `""` would tell Roistat a value, and may overwrite one it has.
#[derive(Debug, Serialize)]
pub struct ExportOrder<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// Unix seconds, as a string.
    pub date_create: String,
    pub status: &'a str,
    /// A JSON number written from the stored decimal: never through a float;
    /// `null` until the CRM reports one.
    pub price: Option<Box<RawValue>>,
    pub cost: Option<Box<RawValue>>,
    /// The visit number; `null` for a lead without one.
    pub roistat: Option<&'a str>,
    pub client_id: Option<&'a str>,
    /// The CRM's manager, else the lead's own `manager_id`; `null` for neither.
    pub manager_id: Option<&'a str>,
    pub fields: &'a BTreeMap<String, String>,
}

impl<'a> ExportOrder<'a> {
    /// An order as the export lists it; `default_status` for one whose deal reported
    /// no status.
    pub fn of(order: &'a Order, default_status: &'a str) -> Self {
        let details = &order.deal.details;
        Self {
            id: &order.order_id,
            name: order.name(),
            date_create: order.date_create().unix_timestamp().to_string(),
            status: order.status(default_status),
            price: details.price.map(money_json),
            cost: details.cost.map(money_json),
            roistat: Some(order.visit.as_str()).filter(|visit| !visit.is_empty()),
            client_id: details.client_id.as_deref(),
            manager_id: order.manager_id(),
            fields: &details.fields,
        }
    }
}

/// `{"statuses":[...],"fields":[...],"managers":[...],"orders":[...],
/// "pagination":{...}}`: the scheme, as the public receivers' export answer
/// extends their scheme answer, and a page of orders.
#[derive(Debug, Serialize)]
pub struct ExportAnswer<'a> {
    pub statuses: &'a [SchemeEntry],
    pub fields: &'a [SchemeEntry],
    pub managers: &'a [Manager],
    pub orders: Vec<ExportOrder<'a>>,
    pub pagination: Pagination,
}

/// A client as `action=export_clients` lists it.
#[derive(Debug, Serialize)]
pub struct ExportClient<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub phone: &'a str,
    pub email: &'a str,
    pub company: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<&'a str>,
}

impl<'a> ExportClient<'a> {
    pub fn of(client: &'a Client) -> Self {
        Self {
            id: &client.id,
            name: &client.name,
            phone: &client.phone,
            email: &client.email,
            company: &client.company,
            birth_date: client.birth_date.as_deref(),
        }
    }
}

/// `{"clients":[...],"pagination":{...}}`.
#[derive(Debug, Serialize)]
pub struct ClientsAnswer<'a> {
    pub clients: Vec<ExportClient<'a>>,
    pub pagination: Pagination,
}

/// A decimal amount as a JSON number.
pub fn money_json(amount: Money) -> Box<RawValue> {
    RawValue::from_string(amount.to_string())
        .unwrap_or_else(|_| RawValue::from_string("0".to_owned()).expect("0 is JSON"))
}

/// `{"status":"ok"}`.
#[derive(Debug, Serialize)]
pub struct OkAnswer {
    pub status: &'static str,
}

impl OkAnswer {
    pub const OK: OkAnswer = OkAnswer { status: "ok" };
}

/// `{"status":"error","error":"..."}`: any failure; Roistat retries.
#[derive(Debug, Serialize)]
pub struct ErrorAnswer<'a> {
    pub status: &'static str,
    pub error: &'a str,
}

impl<'a> ErrorAnswer<'a> {
    pub fn new(error: &'a str) -> Self {
        Self {
            status: "error",
            error,
        }
    }
}
