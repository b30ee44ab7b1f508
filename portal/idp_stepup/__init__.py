"""Step-up at the IdP: arms a held action's one-time grant (above tiers, beside passkeys)."""
