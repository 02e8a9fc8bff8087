/// What a TLS client trusts and shows: redis-py's `ssl_*` settings.
package struct TLSClientSettings: Sendable, Hashable {
    /// PEM file of the certificate authorities to trust; nil trusts the system's store.
    package var caFile: String?
    /// PEM file of a client certificate (chain) to show, for servers that ask for one.
    package var certificateFile: String?
    /// PEM file of the client certificate's private key (the certificate file when nil).
    package var keyFile: String?
    /// Check the server's certificate and name (`ssl_cert_reqs=required`, the default).
    package var verifyPeer: Bool
    /// Check that the certificate names the host connected to (`ssl_check_hostname`, true by
    /// default); false still checks the chain.
    package var checkHostname: Bool

    package init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, verifyPeer: Bool = true,
                 checkHostname: Bool = true) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.verifyPeer = verifyPeer
        self.checkHostname = checkHostname
    }
}
