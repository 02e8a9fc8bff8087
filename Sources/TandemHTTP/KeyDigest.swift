/// A short key part for text of any length (FNV-1a 64 in hex, then the length), so that keys built
/// from URLs stay valid on every backend. Not collision-proof: whoever stores under it keeps the full
/// text in the entry and compares it on every read.
func keyDigest(_ text: String) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return String(h, radix: 16) + ":" + String(text.utf8.count)
}
