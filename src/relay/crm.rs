//! The rest of the own-CRM protocol: deal details, the scheme, clients, and the
//! export walks Roistat pages through.

use time::OffsetDateTime;

use super::{LeadRelay, lead_not_found};
use crate::domain::{Client, Deal, ExportQuery, LeadKey, Scheme};
use crate::error::Error;
use crate::store::{DealReport, ExportKind, ExportPage, ExportedClient, ExportedOrder};

/// A page of an export walk, with what Roistat needs around it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportAnswer<T> {
    pub records: Vec<T>,
    /// How many records the whole walk has: the same on every page.
    pub total_count: u64,
    /// The page size in force.
    pub limit: u64,
}

/// An exported order with its order id resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderExport {
    /// What Roistat was (or will be) answered for the lead.
    pub order_id: String,
    pub order: ExportedOrder,
}

impl LeadRelay {
    /// Records what the CRM reports about a deal: its id and/or details.
    /// A status must be one of the scheme's, once a scheme is published.
    pub async fn report_deal(&self, key: &LeadKey, report: DealReport) -> Result<Deal, Error> {
        if report
            .deal_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(Error::InvalidArgument(
                "deal_id must not be empty".to_owned(),
            ));
        }
        if report.deal_id.is_none() && report.update.is_empty() {
            return Err(Error::InvalidArgument(
                "nothing to report: give deal_id or a deal field".to_owned(),
            ));
        }
        if let Some(status) = &report.update.status {
            self.check_status(&key.integration, status).await?;
        }
        let report = DealReport {
            deal_id: report.deal_id.map(|id| id.trim().to_owned()),
            ..report
        };
        let deal = self.store.report_deal(key, report).await?;
        tracing::info!(lead_id = %key.lead_id, "deal reported");
        Ok(deal)
    }

    async fn check_status(&self, integration: &str, status: &str) -> Result<(), Error> {
        match self.store.get_scheme(integration).await? {
            Some((scheme, _)) if !scheme.has_status(status) => Err(Error::InvalidArgument(
                format!("status {status:?} is not in the scheme's statuses"),
            )),
            _ => Ok(()),
        }
    }

    pub async fn get_deal(&self, key: &LeadKey) -> Result<Deal, Error> {
        self.store.get_deal(key).await?.ok_or_else(lead_not_found)
    }

    /// Publishes the CRM's scheme (replacing the previous one).
    pub async fn update_scheme(
        &self,
        integration: &str,
        scheme: Scheme,
    ) -> Result<(Scheme, OffsetDateTime), Error> {
        scheme.validate().map_err(Error::InvalidArgument)?;
        let update_time = self.store.put_scheme(integration, &scheme).await?;
        tracing::info!(
            integration,
            statuses = scheme.statuses.len(),
            fields = scheme.fields.len(),
            managers = scheme.managers.len(),
            "scheme updated"
        );
        Ok((scheme, update_time))
    }

    /// The published scheme. NOT_FOUND before the first one.
    pub async fn get_scheme(&self, integration: &str) -> Result<(Scheme, OffsetDateTime), Error> {
        self.store
            .get_scheme(integration)
            .await?
            .ok_or_else(|| Error::NotFound("no scheme has been published".to_owned()))
    }

    /// The scheme, or an empty one before the first is published.
    pub async fn scheme_or_empty(&self, integration: &str) -> Result<Scheme, Error> {
        Ok(self
            .store
            .get_scheme(integration)
            .await?
            .map(|(scheme, _)| scheme)
            .unwrap_or_default())
    }

    /// Creates or replaces a client.
    pub async fn report_client(
        &self,
        integration: &str,
        client: Client,
    ) -> Result<(Client, OffsetDateTime), Error> {
        client.validate().map_err(Error::InvalidArgument)?;
        let update_time = self.store.put_client(integration, &client).await?;
        tracing::info!(client_id = %client.id, "client reported");
        Ok((client, update_time))
    }

    /// A page of `action=export`. A call at offset 0 starts a new walk; later pages
    /// of the same query read the same snapshot, so the total stays put and no
    /// order is skipped or repeated while the CRM goes on reporting.
    pub async fn export_orders(
        &self,
        integration: &str,
        query: ExportQuery,
        page_size: u64,
    ) -> Result<ExportAnswer<OrderExport>, Error> {
        let page = self
            .export_page(integration, ExportKind::Orders, query, page_size)
            .await?;
        let (total_count, orders) = self.store.export_orders(integration, page).await?;
        let records = orders
            .into_iter()
            .map(|order| OrderExport {
                order_id: order
                    .deal
                    .order_id(self.order_id_mode)
                    .unwrap_or(&order.deal.key.lead_id)
                    .to_owned(),
                order,
            })
            .collect();
        Ok(ExportAnswer {
            records,
            total_count,
            limit: page.limit,
        })
    }

    /// A page of `action=export_clients`, with the same walk semantics as orders.
    pub async fn export_clients(
        &self,
        integration: &str,
        query: ExportQuery,
        page_size: u64,
    ) -> Result<ExportAnswer<ExportedClient>, Error> {
        let page = self
            .export_page(integration, ExportKind::Clients, query, page_size)
            .await?;
        let (total_count, records) = self.store.export_clients(integration, page).await?;
        Ok(ExportAnswer {
            records,
            total_count,
            limit: page.limit,
        })
    }

    async fn export_page(
        &self,
        integration: &str,
        kind: ExportKind,
        query: ExportQuery,
        page_size: u64,
    ) -> Result<ExportPage, Error> {
        let restart = query.offset == 0;
        let snapshot = self
            .store
            .export_snapshot(integration, kind, query.since, restart)
            .await?;
        Ok(ExportPage {
            snapshot,
            since: query.since,
            offset: query.offset,
            limit: query
                .limit
                .unwrap_or(page_size)
                .min(page_size.max(MAX_EXPORT_LIMIT)),
        })
    }
}

/// Roistat may ask for pages up to this size even if the default page is smaller.
const MAX_EXPORT_LIMIT: u64 = 10_000;
