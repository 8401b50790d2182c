//! http (owned by the HTTP helper while it works)
