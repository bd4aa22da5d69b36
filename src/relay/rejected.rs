//! Webhook requests the service refused: those that passed the token check are
//! stored with what they carried (the token masked), the newest per integration;
//! those refused before it are counted and kept in memory, the last
//! [`REFUSED_KEPT`], without their parameters. Both read as one listing.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use super::{Error, LeadRelay};
use crate::domain::{RejectedFilter, RejectedRequest};
use crate::telemetry;

/// Requests refused before the token check kept in memory.
pub const REFUSED_KEPT: usize = 1_000;

/// Refusals logged per second at most (in bursts of twice as many); the others are
/// counted in the next line logged.
const LOGGED_PER_SECOND: NonZeroU32 = NonZeroU32::new(5).unwrap();
const LOGGED_BURST: NonZeroU32 = NonZeroU32::new(10).unwrap();
/// How much of a refused request's path a log line shows.
const LOGGED_PATH_BYTES: usize = 64;

/// The in-memory ring of requests refused before the token check, and the limit on
/// how many refusals are logged: a flood of them must not flood the log.
pub(super) struct RefusedRing {
    requests: Mutex<VecDeque<RejectedRequest>>,
    next_id: AtomicU64,
    log_budget: governor::DefaultDirectRateLimiter,
    unlogged: AtomicU64,
}

impl Default for RefusedRing {
    fn default() -> Self {
        let quota = governor::Quota::per_second(LOGGED_PER_SECOND).allow_burst(LOGGED_BURST);
        Self {
            requests: Mutex::default(),
            next_id: AtomicU64::default(),
            log_budget: governor::RateLimiter::direct(quota),
            unlogged: AtomicU64::default(),
        }
    }
}

impl RefusedRing {
    /// Logs a refusal, unless too many were logged of late.
    fn log(&self, request: &RejectedRequest) {
        if self.log_budget.check().is_err() {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            path = %bounded(&request.path, LOGGED_PATH_BYTES),
            client = %request.source,
            status = request.status,
            reason = %bounded(&request.reason, 200),
            unlogged_before = unlogged,
            "webhook request refused"
        );
    }

    fn push(&self, mut request: RejectedRequest) {
        request.id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if requests.len() == REFUSED_KEPT {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    /// Newest first, with an id below `before`, at most `limit`.
    fn list(
        &self,
        filter: &RejectedFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Vec<RejectedRequest> {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests
            .iter()
            .rev()
            .filter(|request| before.is_none_or(|before| request.id < before))
            .filter(|request| filter.matches(request))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Where a listing of refused requests continues: below these ids in each source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectedCursor {
    pub stored_before: Option<u64>,
    pub memory_before: Option<u64>,
}

const CURSOR_PREFIX: &str = "rejected:";

impl RejectedCursor {
    /// The page token that continues a listing here.
    pub fn token(&self) -> String {
        let id = |id: Option<u64>| id.map_or("-".to_owned(), |id| id.to_string());
        format!(
            "{CURSOR_PREFIX}{}:{}",
            id(self.stored_before),
            id(self.memory_before)
        )
    }

    /// The cursor of a page token; the start for an empty one, `None` for one this
    /// service did not issue.
    pub fn parse(token: &str) -> Option<Self> {
        if token.is_empty() {
            return Some(Self::default());
        }
        let (stored, memory) = token.strip_prefix(CURSOR_PREFIX)?.split_once(':')?;
        let id = |text: &str| match text {
            "-" => Some(None),
            text => text.parse().ok().map(Some),
        };
        Some(Self {
            stored_before: id(stored)?,
            memory_before: id(memory)?,
        })
    }
}

/// A page of refused requests, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedPage {
    pub requests: Vec<RejectedRequest>,
    /// Where the next page starts; `None` when there is none.
    pub next: Option<RejectedCursor>,
}

impl RejectedPage {
    /// Where a listing that started at `start` continues after this page's
    /// requests (as cut, if it was).
    pub fn cursor_after(&self, start: RejectedCursor) -> RejectedCursor {
        let mut cursor = start;
        for request in &self.requests {
            if request.authenticated {
                cursor.stored_before = Some(request.id);
            } else {
                cursor.memory_before = Some(request.id);
            }
        }
        cursor
    }
}

impl LeadRelay {
    /// Keeps a request refused after the token check, with what it carried;
    /// `label` says why, for the metrics.
    pub async fn record_rejected(&self, request: RejectedRequest, label: &'static str) {
        telemetry::request_refused("after_token", label);
        let keep = self.options.rejected_keep;
        if keep == 0 {
            return;
        }
        if let Err(error) = self.store.record_rejected(request, keep).await {
            tracing::warn!(%error, "cannot keep a rejected request");
        }
    }

    /// Counts and remembers a request refused before the token check; `label`
    /// says why, for the metrics.
    pub fn record_refused(&self, request: RejectedRequest, label: &'static str) {
        telemetry::request_refused("before_token", label);
        self.refused.log(&request);
        self.refused.push(request);
    }

    /// Refused requests, newest first, both those stored and those in memory.
    pub async fn list_rejected(
        &self,
        filter: &RejectedFilter,
        cursor: RejectedCursor,
        limit: u32,
    ) -> Result<RejectedPage, Error> {
        let stored = match filter.authenticated {
            Some(false) => vec![],
            _ => {
                let store = &self.store;
                store
                    .list_rejected(filter, cursor.stored_before, limit)
                    .await?
            }
        };
        let memory = match filter.authenticated {
            Some(true) => vec![],
            _ => self
                .refused
                .list(filter, cursor.memory_before, limit as usize),
        };
        let full = |list: &Vec<RejectedRequest>| list.len() == limit as usize;
        let maybe_more = full(&stored) || full(&memory);
        let (mut stored, mut memory) =
            (stored.into_iter().peekable(), memory.into_iter().peekable());
        let mut next = cursor;
        let mut requests = Vec::with_capacity(limit as usize);
        while requests.len() < limit as usize {
            let take_stored = match (stored.peek(), memory.peek()) {
                (Some(a), Some(b)) => a.time >= b.time,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let request = if take_stored {
                stored.next()
            } else {
                memory.next()
            };
            let Some(request) = request else { break };
            if take_stored {
                next.stored_before = Some(request.id);
            } else {
                next.memory_before = Some(request.id);
            }
            requests.push(request);
        }
        let left = stored.peek().is_some() || memory.peek().is_some();
        Ok(RejectedPage {
            requests,
            next: (left || maybe_more).then_some(next),
        })
    }
}

/// A refusal before the token check, as the webhook saw it.
pub fn refused(
    integration: &str,
    source: String,
    path: &str,
    reason: String,
    status: u16,
) -> RejectedRequest {
    RejectedRequest {
        id: 0,
        time: OffsetDateTime::now_utc(),
        integration: integration.to_owned(),
        source,
        authenticated: false,
        path: bounded(path, 256),
        action: String::new(),
        // A reason may echo what the caller sent (an integration's name): bounded,
        // so the ring is bounded in bytes as well as in count.
        reason: bounded(&reason, 256),
        status,
        query: vec![],
        body: vec![],
    }
}

/// At most `limit` bytes of `text`, cut at a character boundary.
pub fn bounded(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_their_token() {
        for cursor in [
            RejectedCursor::default(),
            RejectedCursor {
                stored_before: Some(12),
                memory_before: None,
            },
            RejectedCursor {
                stored_before: Some(3),
                memory_before: Some(9),
            },
        ] {
            assert_eq!(RejectedCursor::parse(&cursor.token()), Some(cursor));
        }
        assert_eq!(RejectedCursor::parse("after:12"), None);
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let ring = RefusedRing::default();
        for n in 0..REFUSED_KEPT + 5 {
            ring.push(refused(
                "default",
                "203.0.113.1".into(),
                "/webhook",
                n.to_string(),
                401,
            ));
        }
        let all = ring.list(&RejectedFilter::default(), None, REFUSED_KEPT * 2);
        assert_eq!(all.len(), REFUSED_KEPT);
        assert_eq!(all[0].reason, (REFUSED_KEPT + 4).to_string());
        let older = ring.list(&RejectedFilter::default(), Some(all[1].id), 1);
        assert_eq!(older[0].id, all[2].id);
        assert_eq!(bounded("ЖЖЖ", 3), "Ж");
    }
}
