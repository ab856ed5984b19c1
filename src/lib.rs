//! thoonk-sync: an offline-first sync client for feed-shaped web apps.
