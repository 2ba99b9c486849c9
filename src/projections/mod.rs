//! Read models built from the event log by checkpointed subscribers. Each is a table in the
//! same Postgres that can be thrown away and rebuilt from the events.

pub mod audit_log;
pub mod canvas;
pub mod event_counts;
pub mod proposals;
pub mod users;

pub use audit_log::AuditLog;
pub use canvas::Canvas;
pub use event_counts::EventCounts;
pub use proposals::Proposals;
pub use users::Users;
