//! alpaca
