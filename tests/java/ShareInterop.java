import java.time.Duration;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;

/**
 * Kafka's own share consumer, for tests/transport/test_sharegroup_interop.py: one member of a share group
 * that prints the value of every record it receives (one per line, nothing else on stdout),
 * acknowledges each with ACCEPT, and exits once nothing has arrived for {@code idleMs} after its
 * last record (or {@code firstMs} after its start while none came), and after {@code maxMs} anyway.
 *
 * <p>Arguments: bootstrap group topic firstMs idleMs maxMs perRecordMs maxPollRecords
 */
public final class ShareInterop {
    private ShareInterop() {}

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String group = args[1];
        String topic = args[2];
        long firstMs = Long.parseLong(args[3]);
        long idleMs = Long.parseLong(args[4]);
        long maxMs = Long.parseLong(args[5]);
        long perRecordMs = Long.parseLong(args[6]);
        String maxPollRecords = args[7];

        Properties props = new Properties();
        props.setProperty("bootstrap.servers", bootstrap);
        props.setProperty("group.id", group);
        props.setProperty("client.id", "java-share-interop");
        props.setProperty("key.deserializer", "org.apache.kafka.common.serialization.StringDeserializer");
        props.setProperty("value.deserializer", "org.apache.kafka.common.serialization.StringDeserializer");
        props.setProperty("share.acknowledgement.mode", "explicit");
        // At most maxPollRecords records per fetch, none prefetched: the Python member gets its share.
        props.setProperty("share.acquire.mode", "record_limit");
        props.setProperty("max.poll.records", maxPollRecords);

        long start = System.currentTimeMillis();
        long lastRecord = start;
        int received = 0;
        try (KafkaShareConsumer<String, String> consumer = new KafkaShareConsumer<>(props)) {
            consumer.subscribe(List.of(topic));
            while (true) {
                long now = System.currentTimeMillis();
                long quiet = received == 0 ? firstMs : idleMs;
                if (now - lastRecord > quiet || now - start > maxMs) {
                    break;
                }
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> record : records) {
                    Thread.sleep(perRecordMs); // "processing"
                    System.out.println(record.value());
                    consumer.acknowledge(record, AcknowledgeType.ACCEPT);
                    received++;
                }
                if (!records.isEmpty()) {
                    consumer.commitSync(Duration.ofSeconds(10));
                    lastRecord = System.currentTimeMillis();
                }
            }
        }
        System.out.flush();
        System.err.println("java share consumer: " + received + " records");
    }
}
