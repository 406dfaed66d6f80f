"""The audit trail that proves itself: a hash chain over the audit stream, per incident
too, sealed by the worker, checked by `loa audit verify`, its head published at
/audit/head (see docs/architecture.md, "A record that proves itself")."""
