"""Project storage backends: where homes and persist locations live on a host."""
