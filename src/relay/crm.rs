//! The rest of the own-CRM protocol: deal details, the scheme, clients, and the
//! export walks Roistat pages through.

use time::OffsetDateTime;

use super::{Error, LeadRelay};
use crate::domain::{
    Client, ClientRecord, Deal, DealReport, ExportQuery, LeadKey, Order, Scheme, SchemeEntry,
    validate_id,
};
use crate::store::{ExportKind, ExportWindow};
use crate::telemetry;

/// A page of an export walk, with what Roistat needs around it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPage<T> {
    pub records: Vec<T>,
    /// How many records the whole walk has: the same on every page.
    pub total_count: u64,
    /// The page size in force.
    pub limit: u64,
}

/// A page of Roistat's export of orders, with the scheme it refers to.
#[derive(Debug, Clone, PartialEq)]
pub struct OrdersExport {
    pub page: ExportPage<Order>,
    /// The published scheme (empty before the first).
    pub scheme: Scheme,
    /// The status of an order whose deal reported none.
    pub default_status: String,
}

impl LeadRelay {
    /// Records what the CRM reports about a deal: its id and/or details.
    /// A status must be one of the scheme's, once a scheme is published.
    pub async fn report_deal(&self, key: &LeadKey, report: DealReport) -> Result<Deal, Error> {
        if let Some(deal_id) = &report.deal_id {
            validate_id("deal_id", deal_id)?;
        }
        report.update.validate()?;
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
        self.store
            .get_deal(key)
            .await?
            .ok_or_else(|| Error::NotFound("lead not found".to_owned()))
    }

    /// Publishes the CRM's scheme (replacing the previous one).
    pub async fn update_scheme(
        &self,
        integration: &str,
        scheme: Scheme,
    ) -> Result<(Scheme, OffsetDateTime), Error> {
        scheme.validate()?;
        if let Some(default) = self.options.default_statuses.get(integration)
            && !scheme.has_status(default)
        {
            return Err(Error::InvalidArgument(format!(
                "statuses must include the default status {default:?} of integration \
                 {integration:?} (default_status in the configuration)"
            )));
        }
        let update_time = self.store.put_scheme(integration, &scheme).await?;
        if self.configured(integration) {
            telemetry::scheme_missing(integration, scheme.statuses.is_empty());
        }
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

    /// What Roistat's `import_scheme` reads: the published scheme, or, before the
    /// first, the default status alone (its name its id), if one is configured.
    pub async fn scheme_for_roistat(&self, integration: &str) -> Result<Scheme, Error> {
        let scheme = self.store.get_scheme(integration).await?;
        Ok(
            match (scheme, self.options.default_statuses.get(integration)) {
                (Some((scheme, _)), _) => scheme,
                (None, Some(default)) => Scheme {
                    statuses: vec![SchemeEntry {
                        id: default.clone(),
                        name: default.clone(),
                    }],
                    ..Scheme::default()
                },
                (None, None) => Scheme::default(),
            },
        )
    }

    /// The status of an order whose deal reported none: the configured default,
    /// else the first status of the scheme, else none.
    pub(super) fn default_status(&self, integration: &str, scheme: &Scheme) -> String {
        match self.options.default_statuses.get(integration) {
            Some(default) => default.clone(),
            None => scheme
                .statuses
                .first()
                .map(|status| status.id.clone())
                .unwrap_or_default(),
        }
    }

    /// Whether orders of `integration` export without a status: it has neither a
    /// default status nor a published scheme with one. Roistat cannot map an empty
    /// status to a status group.
    pub async fn scheme_missing(&self, integration: &str) -> Result<bool, Error> {
        let scheme = self.scheme_for_roistat(integration).await?;
        Ok(self.default_status(integration, &scheme).is_empty())
    }

    /// The configured integrations whose orders export without a status.
    pub async fn integrations_without_status(&self) -> Result<Vec<String>, Error> {
        let mut missing = vec![];
        for integration in &self.options.integrations {
            if self.scheme_missing(integration).await? {
                missing.push(integration.clone());
            }
        }
        Ok(missing)
    }

    fn configured(&self, integration: &str) -> bool {
        self.options
            .integrations
            .iter()
            .any(|name| name == integration)
    }

    /// Creates or replaces a client.
    pub async fn report_client(
        &self,
        integration: &str,
        client: Client,
    ) -> Result<(Client, OffsetDateTime), Error> {
        client.validate()?;
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
    ) -> Result<OrdersExport, Error> {
        let window = self
            .export_window(integration, ExportKind::Orders, query, page_size)
            .await?;
        let (total_count, records) = self.store.export_orders(integration, window).await?;
        let scheme = self.scheme_for_roistat(integration).await?;
        Ok(OrdersExport {
            default_status: self.default_status(integration, &scheme),
            scheme,
            page: ExportPage {
                records,
                total_count,
                limit: window.limit,
            },
        })
    }

    /// A page of `action=export_clients`, with the same walk semantics as orders.
    pub async fn export_clients(
        &self,
        integration: &str,
        query: ExportQuery,
        page_size: u64,
    ) -> Result<ExportPage<ClientRecord>, Error> {
        let window = self
            .export_window(integration, ExportKind::Clients, query, page_size)
            .await?;
        let (total_count, records) = self.store.export_clients(integration, window).await?;
        Ok(ExportPage {
            records,
            total_count,
            limit: window.limit,
        })
    }

    async fn export_window(
        &self,
        integration: &str,
        kind: ExportKind,
        query: ExportQuery,
        page_size: u64,
    ) -> Result<ExportWindow, Error> {
        let restart = query.offset == 0;
        let snapshot = self
            .store
            .export_snapshot(integration, kind, query.since, restart)
            .await?;
        Ok(ExportWindow {
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
