-- Where a reverse proxy (NGINX, `pxs nginx-config`) reaches the node's HTTP port, as the node
-- said in its last `hello` (`upstream_url`, e.g. `http://10.0.0.11:8081`); NULL when it did not
-- say (it listens on every address and was not told), or said something that is not such a URL.
ALTER TABLE nodes ADD COLUMN upstream_url TEXT;
