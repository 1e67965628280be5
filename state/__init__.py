"""Per-customer state: events, sliding windows, the customer record and its stores."""
