"""buckets agent: the per-host daemon that backs up, restores and verifies projects."""
