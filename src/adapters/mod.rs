//! Calls to the outside world. Today: the optional language model that may improve a
//! draft's wording. Execution adapters (Slack, email, Stripe, GitHub, webhooks) live here too.

pub mod llm;
