"""The records every stage shares: incident and approval request, with pure transitions."""
