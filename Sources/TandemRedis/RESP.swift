import CHiredis
import TandemCache

/// A command's arguments as bytes.
@inline(__always)
func cmd(_ parts: [UInt8]...) -> [[UInt8]] { parts }

extension String {
    @inline(__always) var bytes: [UInt8] { Array(utf8) }
}

/// Commands in Redis's protocol (RESP): an array of bulk strings, each with its length, so an
/// argument with CR, LF, space or NUL is one argument and can never become a second command. Written
/// straight into the buffer that goes to the socket.
enum RESP {
    /// Appends one command to `out`.
    static func append(_ args: [[UInt8]], to out: inout [UInt8]) {
        header(UInt8(ascii: "*"), args.count, &out)
        for a in args {
            header(UInt8(ascii: "$"), a.count, &out)
            out.append(contentsOf: a)
            out.append(13)
            out.append(10)
        }
    }

    /// One command's bytes.
    static func command(_ args: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(args.reduce(16) { $0 + $1.count + 16 })
        append(args, to: &out)
        return out
    }

    /// `*<count>\r\n` or `$<length>\r\n`.
    private static func header(_ kind: UInt8, _ n: Int, _ out: inout [UInt8]) {
        out.append(kind)
        let first = out.count
        var v = n
        repeat {
            out.append(UInt8(ascii: "0") + UInt8(v % 10))
            v /= 10
        } while v > 0
        out[first...].reverse()
        out.append(13)
        out.append(10)
    }
}
