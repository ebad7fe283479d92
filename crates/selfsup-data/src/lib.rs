//! selfsup-data
