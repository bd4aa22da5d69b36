//! Named consumers' durable positions.

use super::{Error, LeadRelay};
use crate::domain::{Consumer, validate_consumer_name};

impl LeadRelay {
    /// Acknowledges every event up to and including `sequence` for a consumer
    /// (created if new). Never moves a consumer backwards.
    pub async fn ack(&self, name: &str, sequence: u64) -> Result<Consumer, Error> {
        validate_consumer_name(name)?;
        let latest = self.store.latest_sequence().await?;
        if sequence > latest {
            return Err(Error::InvalidArgument(format!(
                "sequence {sequence} is not stored yet (the latest is {latest})"
            )));
        }
        let max = self.options.max_consumers;
        let consumer = self.store.ack_consumer(name, sequence, max).await?;
        tracing::debug!(consumer = name, sequence, "acknowledged");
        Ok(consumer)
    }

    pub async fn get_consumer(&self, name: &str) -> Result<Consumer, Error> {
        validate_consumer_name(name)?;
        self.store
            .get_consumer(name)
            .await?
            .ok_or_else(consumer_not_found)
    }

    /// Consumers by name, after `after_name`, at most `limit`.
    pub async fn list_consumers(
        &self,
        after_name: &str,
        limit: u32,
    ) -> Result<Vec<Consumer>, Error> {
        Ok(self.store.list_consumers(after_name, limit).await?)
    }

    pub async fn delete_consumer(&self, name: &str) -> Result<(), Error> {
        validate_consumer_name(name)?;
        if self.store.delete_consumer(name).await? {
            tracing::info!(consumer = name, "consumer deleted");
            Ok(())
        } else {
            Err(consumer_not_found())
        }
    }
}

fn consumer_not_found() -> Error {
    Error::NotFound("consumer not found".to_owned())
}
