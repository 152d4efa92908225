//! Scheduled operations-and-maintenance checks; filled by the ops issue (#4).
