import X509

/// Reads what the hub needs from a client certificate.
enum CertificateInspection {
    /// The subject's common name, or nil if the DER does not parse or has none.
    static func commonName(ofDER der: [UInt8]) -> String? {
        guard let certificate = try? Certificate(derEncoded: der) else { return nil }
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                return attribute.value.description
            }
        }
        return nil
    }
}
