// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Tandem",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Tandem", targets: ["Tandem"]),
        // The framework adapters: empty unless their trait is enabled (see `traits` below), so that an app
        // that does not ask for them never builds SwiftNIO, Hummingbird or Vapor.
        .library(name: "TandemHummingbird", targets: ["TandemHummingbird"]),
        .library(name: "TandemVapor", targets: ["TandemVapor"]),
        .library(name: "TandemLoop", targets: ["TandemLoop"]),
        .library(name: "TandemCache", targets: ["TandemCache"]),
        .library(name: "TandemRedis", targets: ["TandemRedis"]),
        .library(name: "TandemMemcached", targets: ["TandemMemcached"]),
        .library(name: "TandemHTTP", targets: ["TandemHTTP"]),
        .library(name: "TandemConfiguration", targets: ["TandemConfiguration"]),
        .executable(name: "tandem", targets: ["tandem"]),
        .executable(name: "tandem-bench", targets: ["tandem-bench"]),
        .executable(name: "tandem-stress", targets: ["tandem-stress"]),
    ],
    traits: [
        .trait(name: "HummingbirdAdapter",
               description: "TandemHummingbird: a PersistDriver on any Tandem cache, response-cache and error middlewares, the guard on NIO threads."),
        .trait(name: "VaporAdapter",
               description: "TandemVapor: Vapor's Cache and SessionDriver on any Tandem cache, response-cache and error middlewares, the guard on NIO threads."),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/vapor/vapor", from: "4.122.3"),
        // `swift package generate-documentation` (Integration/docs.sh); a command plugin, never linked.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // epoll and eventfd, which Swift's Glibc module does not export.
        .target(name: "CTandemSys"),
        .target(
            name: "TandemLoop",
            dependencies: ["CTandemSys", .product(name: "Logging", package: "swift-log"),
                           .product(name: "Metrics", package: "swift-metrics"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        .target(
            name: "TandemCache",
            dependencies: [
                "TandemLoop",
                "CCompression",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // zlib, liblzma, liblz4 and libzstd for OPTIONS.COMPRESSOR (django-redis's compressors).
        .systemLibrary(name: "CCompression", providers: [.apt(["zlib1g-dev", "liblzma-dev", "liblz4-dev", "libzstd-dev"])]),
        // No pkgConfig: hiredis.pc adds -D_FILE_OFFSET_BITS=64, which SwiftPM warns about in every build
        // (users' too); the shim includes <hiredis/hiredis.h> from the default path instead.
        // OpenSSL for TLS to Redis (both faces; the loop's sockets and the blocking connections).
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // Between the loop and the backends: sockets on a loop and on the calling thread, TLS, server
        // addresses. The backends that speak their protocol themselves (Redis, memcached's async
        // face) drive it; the cache front does not link OpenSSL.
        .target(name: "TandemTransport", dependencies: ["TandemLoop", "TandemCache", "COpenSSL"]),
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .target(name: "TandemRedis", dependencies: ["TandemCache", "TandemLoop", "TandemTransport", "CHiredis", .product(name: "Logging", package: "swift-log"),
                                                   .product(name: "Metrics", package: "swift-metrics")]),
        .systemLibrary(name: "CMemcached", pkgConfig: "libmemcached", providers: [.apt(["libmemcached-dev"])]),
        .target(name: "TandemMemcached", dependencies: ["TandemCache", "TandemLoop", "TandemTransport", "CMemcached"]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // Typed wrappers for curl's variadic setopt/getinfo (prefixed ccurl_).
        .target(name: "CCurlShim", dependencies: ["CCurl"]),
        .target(name: "TandemHTTP", dependencies: ["TandemLoop", "TandemCache", "CCurl", "CCurlShim", .product(name: "Logging", package: "swift-log"),
                                                   .product(name: "HTTPTypes", package: "swift-http-types"),
                                                   .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                                   .product(name: "Tracing", package: "swift-distributed-tracing"),
                                                   .product(name: "Metrics", package: "swift-metrics")]),
        .target(name: "Tandem", dependencies: ["TandemLoop", "TandemCache", "TandemRedis", "TandemMemcached", "TandemHTTP"]),
        // What both adapters share: the guard taught SwiftNIO's loop threads.
        .target(name: "TandemNIO", dependencies: [
            "Tandem",
            .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["HummingbirdAdapter", "VaporAdapter"])),
        ]),
        .target(name: "TandemHummingbird", dependencies: [
            "Tandem", "TandemHTTP", "TandemNIO",
            .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: ["HummingbirdAdapter"])),
        ]),
        .target(name: "TandemVapor", dependencies: [
            "Tandem", "TandemHTTP", "TandemNIO",
            .product(name: "Vapor", package: "vapor", condition: .when(traits: ["VaporAdapter"])),
        ]),
        // Caches(configReader:) on apple/swift-configuration, kept out of the umbrella.
        .target(name: "TandemConfiguration", dependencies: ["Tandem", .product(name: "Configuration", package: "swift-configuration")]),
        .executableTarget(
            name: "tandem",
            dependencies: ["Tandem", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "tandem-bench",
            dependencies: ["Tandem", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // A bounded workload over everything, closed cleanly at the end: run under valgrind for leaks.
        .executableTarget(
            name: "tandem-stress",
            dependencies: ["Tandem", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Shared test code (the semantic suite, fixtures, server helpers): used by the test targets only.
        .target(name: "TandemTestSupport", dependencies: ["Tandem"], path: "Tests/Support"),
        .testTarget(name: "TandemLoopTests", dependencies: ["TandemLoop", "TandemTestSupport",
                                                          .product(name: "MetricsTestKit", package: "swift-metrics")]),
        .testTarget(name: "TandemRedisTests", dependencies: ["TandemRedis", "Tandem", "TandemTestSupport",
                                                           .product(name: "MetricsTestKit", package: "swift-metrics")]),
        .testTarget(name: "TandemMemcachedTests", dependencies: ["TandemMemcached", "Tandem", "TandemTestSupport"]),
        .testTarget(name: "TandemHTTPTests", dependencies: ["TandemHTTP", "Tandem", "TandemTestSupport", "CCurl", "CCurlShim",
                                                           .product(name: "MetricsTestKit", package: "swift-metrics")]),
        .testTarget(name: "TandemTransportTests", dependencies: ["TandemTransport", "Tandem", "TandemTestSupport"]),
        .testTarget(name: "TandemCacheTests", dependencies: ["TandemCache", "Tandem", "TandemTestSupport"],
                    exclude: ["Fixtures"]),
        // The fault and bad-input suite (Integration/faults/run.sh runs it on its own, one test at a time).
        .testTarget(name: "TandemFaultTests", dependencies: ["Tandem", "TandemTestSupport", .product(name: "Logging", package: "swift-log"),
                                                          .product(name: "MetricsTestKit", package: "swift-metrics"),
                                                          .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
                    path: "Integration/faults/Tests"),
        // The adapters' tests (Integration/test.sh adapters: built once with both traits, outside the
        // sanitizer phases); without the traits they compile to nothing.
        .testTarget(name: "TandemHummingbirdTests", dependencies: [
            "TandemHummingbird", "TandemTestSupport",
            .product(name: "HummingbirdTesting", package: "hummingbird", condition: .when(traits: ["HummingbirdAdapter"])),
            .product(name: "HummingbirdAuth", package: "hummingbird-auth", condition: .when(traits: ["HummingbirdAdapter"])),
        ], path: "Tests/Adapters/TandemHummingbirdTests"),
        .testTarget(name: "TandemVaporTests", dependencies: [
            "TandemVapor", "TandemTestSupport",
            .product(name: "VaporTesting", package: "vapor", condition: .when(traits: ["VaporAdapter"])),
            // For the test that Tandem's public names compile next to all of theirs.
            .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: ["HummingbirdAdapter"])),
            "TandemHummingbird",
        ], path: "Tests/Adapters/TandemVaporTests"),
        .testTarget(
            name: "TandemTests",
            dependencies: ["Tandem", "TandemTestSupport", "TandemConfiguration",
                           .product(name: "MetricsTestKit", package: "swift-metrics"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                           .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                           .product(name: "Configuration", package: "swift-configuration")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
