//! The adapter boundary between the hub and department systems; filled by the delivery issue (#3).
