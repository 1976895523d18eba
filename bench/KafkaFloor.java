// Kafka's own Java client on the path bench/kafka_alone.py measures with kafka-python: one
// partition, a producer (acks=all, no linger) and a consumer already waiting in poll. Sends one
// message, polls until it arrives, N times after a warm-up of 100 (the JIT's), and prints
// {"p50": µs, "p99": µs}. Run by bench/kafka_alone.py with the broker's own jars on the classpath:
//     java -cp "LIBS/*" bench/KafkaFloor.java BOOTSTRAP TOPIC N
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class KafkaFloor {
    static final int WARM_UP = 100;

    public static void main(String[] args) {
        String bootstrap = args[0], topic = args[1];
        int n = Integer.parseInt(args[2]);
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        p.put("linger.ms", "0");
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("enable.auto.commit", "false");
        c.put("fetch.max.wait.ms", "100");
        long[] took = new long[n];
        byte[] value = new byte[100];
        try (var producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
                var consumer = new KafkaConsumer<>(c, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.assign(List.of(new TopicPartition(topic, 0)));
            consumer.poll(Duration.ofMillis(500));
            for (int i = 0; i < WARM_UP + n; i++) {
                long start = System.nanoTime();
                producer.send(new ProducerRecord<>(topic, value));
                long deadline = start + 10_000_000_000L;
                while (consumer.poll(Duration.ofMillis(100)).isEmpty()) {
                    if (System.nanoTime() > deadline) throw new IllegalStateException("no message within 10 s");
                }
                if (i >= WARM_UP) took[i - WARM_UP] = System.nanoTime() - start;
            }
        }
        Arrays.sort(took);
        System.out.printf("{\"p50\": %d, \"p99\": %d}%n", took[n / 2] / 1000, took[Math.min(n - 1, n * 99 / 100)] / 1000);
    }
}
