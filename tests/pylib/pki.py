"""pki — CAs and certificates made at test time with Debian's openssl, for the TLS tests: a server
CA, a client CA and an unrelated CA whose certificates must be refused."""

import os
import subprocess


class Pki:
    """In directory d: server_ca, client_ca, other_ca (.pem/.key); a server certificate for
    localhost and 127.0.0.1 (server_cert, server_key); a client certificate of the client CA
    (client_cert, client_key) and one of the other CA (rogue_cert, rogue_key). Paths, and
    server_ca_pem / other_ca_pem as bytes."""

    def __init__(self, d):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        for ca in ("server_ca", "client_ca", "other_ca"):
            self._make_ca(ca)
            setattr(self, ca, os.path.join(d, ca + ".pem"))
        self.server_cert, self.server_key = self._make_cert(
            "localhost", "server_ca", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        self.client_cert, self.client_key = self._make_cert("client", "client_ca",
                                                            "extendedKeyUsage=clientAuth")
        self.rogue_cert, self.rogue_key = self._make_cert("rogue", "other_ca",
                                                          "extendedKeyUsage=clientAuth")
        self.server_ca_pem, self.other_ca_pem = read(self.server_ca), read(self.other_ca)

    def _openssl(self, *args):
        subprocess.run(["openssl", *args], check=True, cwd=self.dir, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def _make_ca(self, name):
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
                      "-subj", "/CN=decoserve test " + name)

    def _make_cert(self, name, ca, extensions):
        """A key and a certificate signed by ca; the file paths."""
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj",
                      "/CN=" + name)
        with open(os.path.join(self.dir, name + ".ext"), "w") as f:
            f.write(extensions + "\n")
        self._openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey",
                      ca + ".key", "-CAcreateserial", "-out", name + ".pem", "-days", "2",
                      "-extfile", name + ".ext")
        return os.path.join(self.dir, name + ".pem"), os.path.join(self.dir, name + ".key")


def read(path):
    with open(path, "rb") as f:
        return f.read()
