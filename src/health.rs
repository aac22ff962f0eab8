//! The readiness of a node's parts (an event source's connection, the store), as
//! `/readyz` reports it beside the hub's own.

use std::sync::Arc;

use parking_lot::Mutex;

/// Every part that reports its readiness. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Components {
    list: Arc<Mutex<Vec<Readiness>>>,
}

impl Components {
    /// Registers a part whose health `/readyz` reports. It starts unready until it
    /// says otherwise.
    pub fn register(&self, name: &'static str) -> Readiness {
        let component = Readiness {
            name,
            state: Arc::new(Mutex::new(Some("starting".into()))),
        };
        self.list.lock().push(component.clone());
        component
    }

    /// Whether every part is ready; otherwise which is not, and why.
    pub fn check(&self) -> Result<(), String> {
        let list = self.list.lock().clone();
        for component in list {
            if let Some(reason) = component.state.lock().clone() {
                return Err(format!("{}: {reason}", component.name));
            }
        }
        Ok(())
    }
}

/// The readiness of one part, as reported by `/readyz`.
#[derive(Debug, Clone)]
pub struct Readiness {
    name: &'static str,
    /// `None` when ready; otherwise why not.
    state: Arc<Mutex<Option<String>>>,
}

impl Readiness {
    /// The part is working.
    pub fn ready(&self) {
        *self.state.lock() = None;
    }

    /// The part is not working, and why (shown by `/readyz`, URL credentials
    /// hidden).
    pub fn unready(&self, reason: impl Into<String>) {
        *self.state.lock() = Some(crate::redact::redact_url(&reason.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_must_be_ready() {
        let components = Components::default();
        assert_eq!(components.check(), Ok(()));
        let store = components.register("store");
        assert_eq!(components.check(), Err("store: starting".into()));
        store.ready();
        assert_eq!(components.check(), Ok(()));
        store.unready("disk full");
        assert_eq!(components.check(), Err("store: disk full".into()));
    }
}
