"""Care work (结对帮扶, 谈心, 家访): pairings, care records and the rhythm of who is due or overdue."""
