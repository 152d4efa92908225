// A department system's client of the hub in Java: java.net.http with the department's PKCS#12 key
// store (`hub pki issue --p12-password-env`), against the sandbox config. Both sides of one
// exchange, as examples/python does: Civil Affairs publishes (and replays) a marriage registration
// and reads a refusal's JSON pointers; Family Planning reads it projected, pulls and acknowledges
// its feed, and receives the webhook, verifying its Standard Webhooks signature with javax.crypto.
//
// Only the JDK (17+), so that it runs as a single source file:
//   HUB_P12_PASSWORD=... HUB_SANDBOX_WEBHOOK_SECRET=... java examples/java/DepartmentClient.java \
//       --hub https://127.0.0.1:8443 --pki sandbox-data/pki
// A real system parses JSON with its own library (Jackson, Gson); the small reader at the end
// stands in for it here. Exits 0 when every step did what the contract says, 1 otherwise.

import com.sun.net.httpserver.HttpServer;
import java.io.FileInputStream;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class DepartmentClient {
    static final String TYPE = "marriage-registration";
    static final String PURPOSE = "birth-service-registration";

    public static void main(String[] args) throws Exception {
        Map<String, String> opt = new LinkedHashMap<>(Map.of(
                "--hub", "https://127.0.0.1:8443", "--pki", "sandbox-data/pki", "--webhook-port", "8787"));
        for (int i = 0; i + 1 < args.length; i += 2) opt.put(args[i], args[i + 1]);
        String hub = opt.get("--hub").replaceAll("/$", "");
        Path pki = Path.of(opt.get("--pki"));
        char[] password = System.getenv("HUB_P12_PASSWORD").toCharArray();

        // The webhook endpoint first: the hub may push before the publish call returns.
        LinkedBlockingQueue<Map<String, Object>> verified =
                receiver(Integer.parseInt(opt.get("--webhook-port")), System.getenv("HUB_SANDBOX_WEBHOOK_SECRET"));

        HttpClient civil = client(pki, "civil-affairs", password);
        HttpClient family = client(pki, "family-planning", password);

        // 1. Publish, with an Idempotency-Key, and replay: the same receipt.
        Path typical = Path.of("schemas", TYPE, "v1", "examples", "valid", "typical.json");
        String key = String.format("J440184-2026-%06d", new SecureRandom().nextInt(1_000_000));
        String record = Files.readString(typical).replace("J440184-2026-000123", key);
        String idem = "example-java-" + key;
        // A W3C trace context (your OpenTelemetry instrumentation sends one): the deliveries carry it.
        String traceId = hex(16), traceparent = "00-" + traceId + "-" + hex(8) + "-01";
        Map<String, Object> receipt = json(expect(civil, post(hub + "/v1/records/" + TYPE, record).header("Idempotency-Key", idem).header("traceparent", traceparent), 201, "publish"));
        System.out.printf("published %s/%s v%s (audit #%s)%n", receipt.get("type"), receipt.get("key"), receipt.get("version"), receipt.get("audit_seq"));
        Map<String, Object> again = json(expect(civil, post(hub + "/v1/records/" + TYPE, record).header("Idempotency-Key", idem), 200, "replay"));
        check(again.equals(receipt), "replay: a different receipt " + again);

        // 2. A refused record: 422, problem+json, every violation with its JSON pointer.
        String bad = record.replace("\"kind\": \"marriage\"", "\"kind\": \"engagement\"");
        Map<String, Object> problem = json(expect(civil, post(hub + "/v1/records/" + TYPE, bad), 422, "invalid publish"));
        for (Object e : (List<?>) problem.get("errors")) {
            Map<?, ?> v = (Map<?, ?>) e;
            System.out.println("refused: " + v.get("pointer") + " " + v.get("message"));
        }

        // 3. Read as Family Planning for its purpose: only the granted fields.
        String read = hub + "/v1/records/" + TYPE + "/" + key + "?purpose=" + URLEncoder.encode(PURPOSE, StandardCharsets.UTF_8);
        Map<String, Object> got = json(expect(family, HttpRequest.newBuilder(URI.create(read)).GET(), 200, "read"));
        Map<?, ?> party = (Map<?, ?>) ((List<?>) ((Map<?, ?>) got.get("data")).get("parties")).get(0);
        check(Boolean.TRUE.equals(got.get("projected")) && !party.containsKey("hukou_address"), "read: a field outside the grant came");
        System.out.println("read projected: a party has " + party.keySet());

        // 4. Pull the feed (long poll) until the record's event comes, then acknowledge.
        String subject = TYPE + "/" + key, cursor = null;
        Map<?, ?> found = null;
        for (int i = 0; i < 10 && found == null; i++) {
            String url = hub + "/v1/feeds/sandbox-feed?wait=5&limit=100" + (cursor == null ? "" : "&after=" + cursor);
            Map<String, Object> page = json(expect(family, HttpRequest.newBuilder(URI.create(url)).GET(), 200, "feed"));
            cursor = (String) page.get("cursor");
            for (Object e : (List<?>) page.get("events")) if (subject.equals(((Map<?, ?>) e).get("subject"))) found = (Map<?, ?>) e;
        }
        check(found != null, "feed: the published record's event never came");
        Map<String, Object> ack = json(expect(family, post(hub + "/v1/feeds/sandbox-feed/ack", "{\"cursor\":\"" + cursor + "\"}"), 200, "ack"));
        System.out.printf("feed: event %s (%s), acknowledged %s up to %s%n", found.get("id"), found.get("type"), ack.get("acknowledged"), ack.get("cursor"));

        // 5. The webhook: the same record, pushed and signed.
        while (true) {
            Map<String, Object> event = verified.poll(30, TimeUnit.SECONDS);
            check(event != null, "webhook: no verified delivery of the published record within 30 s");
            if (subject.equals(event.get("subject"))) {
                check(traceId.equals(((String) event.get("traceparent")).split("-")[1])
                        && traceId.equals(String.valueOf(event.get("_traceparent_header")).split("-")[1]), "webhook: the trace was not carried");
                System.out.printf("webhook: %s verified (%s, record version %s, trace %s)%n", event.get("id"), event.get("type"), event.get("recordversion"), traceId);
                break;
            }
        }
        System.out.println("ok");
        System.exit(0);
    }

    /** A client that presents the principal's key store and trusts only the hub's CA. */
    static HttpClient client(Path pki, String name, char[] password) throws Exception {
        KeyStore keys = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(pki.resolve("clients").resolve(name + ".p12").toFile())) {
            keys.load(in, password);
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, password);
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        try (InputStream in = new FileInputStream(pki.resolve("ca.crt").toFile())) {
            trust.setCertificateEntry("hub-ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return HttpClient.newBuilder().sslContext(tls).connectTimeout(Duration.ofSeconds(10)).build();
    }

    static String hex(int bytes) {
        byte[] b = new byte[bytes];
        new SecureRandom().nextBytes(b);
        StringBuilder s = new StringBuilder();
        for (byte x : b) s.append(String.format("%02x", x));
        return s.toString();
    }

    static HttpRequest.Builder post(String url, String body) {
        return HttpRequest.newBuilder(URI.create(url)).header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body));
    }

    static String expect(HttpClient c, HttpRequest.Builder r, int status, String step) throws Exception {
        HttpResponse<String> res = c.send(r.timeout(Duration.ofSeconds(30)).build(), HttpResponse.BodyHandlers.ofString());
        check(res.statusCode() == status, step + ": expected " + status + ", got " + res.statusCode() + ": " + res.body());
        return res.body();
    }

    static void check(boolean ok, String why) {
        if (!ok) {
            System.err.println(why);
            System.exit(1);
        }
    }

    /** The department's webhook endpoint: verifies each delivery and queues the verified events. */
    static LinkedBlockingQueue<Map<String, Object>> receiver(int port, String secret) throws Exception {
        LinkedBlockingQueue<Map<String, Object>> verified = new LinkedBlockingQueue<>();
        byte[] key = Base64.getDecoder().decode(secret.substring("whsec_".length()));
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 0);
        server.createContext("/", exchange -> {
            byte[] body = exchange.getRequestBody().readAllBytes();
            String id = exchange.getRequestHeaders().getFirst("webhook-id");
            String ts = exchange.getRequestHeaders().getFirst("webhook-timestamp");
            String sigs = exchange.getRequestHeaders().getFirst("webhook-signature");
            boolean ok = id != null && ts != null && sigs != null && signatureValid(key, id, ts, body, sigs);
            // 2xx acknowledges; the hub retries anything else.
            exchange.sendResponseHeaders(ok ? 204 : 401, -1);
            exchange.close();
            if (ok) {
                Map<String, Object> event = json(new String(body, StandardCharsets.UTF_8));
                event.put("_traceparent_header", exchange.getRequestHeaders().getFirst("traceparent"));
                verified.add(event);
            }
        });
        server.start();
        return verified;
    }

    /** Standard Webhooks: HMAC-SHA256 over "id.timestamp.body"; any one "v1," signature may match
     * (several are sent while a secret is rotated); a timestamp more than 5 minutes off is a replay. */
    static boolean signatureValid(byte[] key, String id, String ts, byte[] body, String header) {
        try {
            if (Math.abs(Instant.now().getEpochSecond() - Long.parseLong(ts)) > 300) return false;
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            mac.update((id + "." + ts + ".").getBytes(StandardCharsets.UTF_8));
            byte[] expected = mac.doFinal(body);
            for (String sig : header.split(" ")) {
                if (sig.startsWith("v1,") && MessageDigest.isEqual(expected, Base64.getDecoder().decode(sig.substring(3)))) return true;
            }
        } catch (Exception e) {
            return false;
        }
        return false;
    }

    // A minimal JSON reader (objects, arrays, strings, numbers, literals) standing in for a library.
    @SuppressWarnings("unchecked")
    static Map<String, Object> json(String text) {
        return (Map<String, Object>) new Object() {
            int i = 0;

            Object value() {
                skip();
                char c = text.charAt(i);
                if (c == '{') {
                    Map<String, Object> m = new LinkedHashMap<>();
                    i++;
                    skip();
                    if (text.charAt(i) == '}') { i++; return m; }
                    do {
                        skip();
                        String k = (String) value();
                        skip();
                        i++; // ':'
                        m.put(k, value());
                        skip();
                    } while (text.charAt(i++) == ',');
                    return m;
                }
                if (c == '[') {
                    List<Object> l = new ArrayList<>();
                    i++;
                    skip();
                    if (text.charAt(i) == ']') { i++; return l; }
                    do { l.add(value()); skip(); } while (text.charAt(i++) == ',');
                    return l;
                }
                if (c == '"') {
                    StringBuilder s = new StringBuilder();
                    for (i++; text.charAt(i) != '"'; i++) {
                        char ch = text.charAt(i);
                        if (ch == '\\') {
                            char e = text.charAt(++i);
                            switch (e) {
                                case 'n' -> s.append('\n');
                                case 't' -> s.append('\t');
                                case 'r' -> s.append('\r');
                                case 'b' -> s.append('\b');
                                case 'f' -> s.append('\f');
                                case 'u' -> { s.append((char) Integer.parseInt(text.substring(i + 1, i + 5), 16)); i += 4; }
                                default -> s.append(e);
                            }
                        } else s.append(ch);
                    }
                    i++;
                    return s.toString();
                }
                int start = i;
                while (i < text.length() && ",}] \n\r\t".indexOf(text.charAt(i)) < 0) i++;
                String w = text.substring(start, i);
                return switch (w) {
                    case "true" -> Boolean.TRUE;
                    case "false" -> Boolean.FALSE;
                    case "null" -> null;
                    default -> w.matches("-?\\d+") ? (Object) Long.parseLong(w) : (Object) Double.parseDouble(w);
                };
            }

            void skip() {
                while (i < text.length() && Character.isWhitespace(text.charAt(i))) i++;
            }
        }.value();
    }
}
