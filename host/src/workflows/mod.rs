//! Workflows: durable multi-step orchestration. A definition
//! ([`definition`]) names steps — tasks, condition-decided choices,
//! approvals, ends — and how they connect; templates ([`template`]) carry
//! earlier outputs into later steps; the engine ([`engine`]) advances each
//! workflow on the durable queue, its steps' tasks being ordinary tasks;
//! [`service`] is what the API calls; [`catalog`] keeps definitions as
//! versioned templates with typed variables.

pub mod catalog;
pub mod definition;
pub mod engine;
pub mod service;
pub mod status;
pub mod template;
